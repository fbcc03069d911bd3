"""A tiny authoritative DNS server on 127.0.0.1 (UDP) for tests: TXT records by name, NXDOMAIN for
anything else, or no answer at all while ``silent`` (a resolver timing out)."""

from __future__ import annotations

import socket
import threading

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsStub:
    def __init__(self, txt: dict[str, list[bytes]]) -> None:
        self.txt = txt
        self.silent = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = False
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> DnsStub:
        self.running = True
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while self.running:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            if self.silent:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            strings = self.txt.get(question.name.to_text())
            if strings is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT:
                text = " ".join('"' + s.decode() + '"' for s in strings)
                response.answer.append(dns.rrset.from_text(question.name, 300, dns.rdataclass.IN,
                                                           dns.rdatatype.TXT, text))
            self.sock.sendto(response.to_wire(), peer)
