"""chatmail-dns-zone: the records, the zone file (validated by BIND's named-checkzone), DKIM key
reading (checked against openssl and opendkim-genkey), and --check against a fake DNS server on
127.0.0.1 that answers over UDP and TCP from a dict."""

from __future__ import annotations

import base64
import ipaddress
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from chatmaild import dnszone
from chatmaild.dnszone import (
    DkimKeyError,
    DnsError,
    Record,
    Resolver,
    ZoneParams,
    build_query,
    compare_records,
    dkim_public_key,
    parse_resolver,
    parse_response,
    public_source_address,
    render_zone,
    resolver_from_resolv_conf,
    sts_id_from_txt,
    zone_records,
)

D = "chat.example.org"
ACME_URL = "https://acme-v02.api.letsencrypt.org/acme/acct/123"


def need_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: install the Debian package {package}")
    return path


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


# --- DKIM keys ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dkim_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """A key pair from opendkim-genkey in every format dkim_public_key reads, and the expected p=
    value computed by openssl."""
    keydir = tmp_path_factory.mktemp("dkim")
    run(
        need_tool("opendkim-genkey", "opendkim-tools"), "-s", "opendkim", "-d", D, "-D", str(keydir)
    )
    openssl = need_tool("openssl", "openssl")
    private = keydir / "opendkim.private"
    run(openssl, "rsa", "-in", str(private), "-traditional", "-out", str(keydir / "pkcs1.pem"))
    run(openssl, "pkey", "-in", str(private), "-pubout", "-out", str(keydir / "public.pem"))
    der = subprocess.run(
        [openssl, "pkey", "-in", str(private), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    return {
        "pkcs8": private,
        "pkcs1": keydir / "pkcs1.pem",
        "public": keydir / "public.pem",
        "txt": keydir / "opendkim.txt",
        "p": base64.b64encode(der).decode(),
    }


@pytest.mark.parametrize("fmt", ["pkcs8", "pkcs1", "public", "txt"])
def test_dkim_public_key_from_every_format_matches_openssl(dkim_keys, fmt: str):
    text = Path(dkim_keys[fmt]).read_text()
    assert fmt != "pkcs1" or "BEGIN RSA PRIVATE KEY" in text  # really the PKCS#1 form
    assert dkim_public_key(text) == dkim_keys["p"]


def test_dkim_public_key_rejects_other_keys(tmp_path: Path):
    openssl = need_tool("openssl", "openssl")
    ed25519 = tmp_path / "ed25519.pem"
    run(openssl, "genpkey", "-algorithm", "ed25519", "-out", str(ed25519))
    with pytest.raises(DkimKeyError, match="RSA"):
        dkim_public_key(ed25519.read_text())
    with pytest.raises(DkimKeyError, match="ENCRYPTED PRIVATE KEY"):
        dkim_public_key(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"
        )
    with pytest.raises(DkimKeyError):
        dkim_public_key(
            'opendkim._domainkey IN TXT ( "v=DKIM1; k=ed25519; "'
            ' "p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=" )'
        )
    with pytest.raises(DkimKeyError):
        dkim_public_key("-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n")


# --- the records and the zone file -------------------------------------------------------------


def params(dkim_key: str = "PUBKEY", **overrides: object) -> ZoneParams:
    values: dict[str, object] = dict(
        mail_domain=D,
        ipv4=["1.2.3.4"],
        ipv6=["2001:db8::5"],
        dkim_public_key=dkim_key,
        sts_id="202501011200",
    )
    values.update(overrides)
    return ZoneParams(**values)  # type: ignore[arg-type]


def test_zone_records_are_upstreams():
    records = [
        (r.name, r.rtype, r.value, r.required)
        for r in zone_records(params(acme_account_url=ACME_URL))
    ]
    assert records == [
        (f"{D}.", "A", "1.2.3.4", True),
        (f"{D}.", "AAAA", "2001:db8::5", True),
        (f"{D}.", "MX", f"10 {D}.", True),
        (f"_mta-sts.{D}.", "TXT", "v=STSv1; id=202501011200", True),
        (f"mta-sts.{D}.", "CNAME", f"{D}.", True),
        (f"www.{D}.", "CNAME", f"{D}.", True),
        (f"opendkim._domainkey.{D}.", "TXT", "v=DKIM1;k=rsa;p=PUBKEY;s=email;t=s", True),
        (f"{D}.", "TXT", "v=spf1 a ~all", False),
        (f"_dmarc.{D}.", "TXT", "v=DMARC1;p=reject;adkim=s;aspf=s", False),
        (f"{D}.", "CAA", f'0 issue "letsencrypt.org;accounturi={ACME_URL}"', False),
        (f"_adsp._domainkey.{D}.", "TXT", "dkim=discardable", False),
        (f"_submission._tcp.{D}.", "SRV", f"0 1 587 {D}.", False),
        (f"_submissions._tcp.{D}.", "SRV", f"0 1 465 {D}.", False),
        (f"_imap._tcp.{D}.", "SRV", f"0 1 143 {D}.", False),
        (f"_imaps._tcp.{D}.", "SRV", f"0 1 993 {D}.", False),
    ]


def test_zone_records_options():
    records = zone_records(params(ipv4=["1.2.3.4", "5.6.7.8"], ipv6=[], dkim_selector="sel2025"))
    assert [r.value for r in records if r.rtype == "A"] == ["1.2.3.4", "5.6.7.8"]
    assert not [r for r in records if r.rtype == "AAAA"]
    assert [r.name for r in records if r.value.startswith("v=DKIM1")] == [
        f"sel2025._domainkey.{D}."
    ]
    assert [r.value for r in records if r.rtype == "CAA"] == ['0 issue "letsencrypt.org"']


def read_bind_dump(path: Path) -> set[tuple[str, str, str]]:
    """(name, type, data) of every record in a named-checkzone -D dump; TXT strings joined."""
    records = set()
    for line in path.read_text().splitlines():
        name, _ttl, _class, rtype, data = line.split(None, 4)
        if rtype == "TXT":
            data = "".join(
                re.sub(r"\\(.)", r"\1", s) for s in re.findall(r'"((?:[^"\\]|\\.)*)"', data)
            )
        if rtype not in ("SOA", "NS"):
            records.add((name, rtype, " ".join(data.split()) if rtype != "TXT" else data))
    return records


def bind_check(tmp_path: Path, zone_text: str, domain: str = D) -> set[tuple[str, str, str]]:
    """Load ``zone_text`` (plus SOA and NS) into named-checkzone, strictly; return its dump."""
    checkzone = need_tool("named-checkzone", "bind9-utils")
    zonefile, dump = tmp_path / "zone", tmp_path / "zone.dump"
    zonefile.write_text(
        "$TTL 3600\n"
        "@ IN SOA ns.invalid. hostmaster.invalid. 1 3600 600 86400 300\n"
        "@ IN NS ns.invalid.\n" + zone_text
    )
    proc = subprocess.run(
        [checkzone, "-k", "fail", "-i", "full", "-D", "-o", str(dump), domain, str(zonefile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr
    return read_bind_dump(dump)


def test_zone_file_loads_in_bind_with_the_same_records(tmp_path: Path, dkim_keys):
    records = zone_records(params(dkim_keys["p"], acme_account_url=ACME_URL))
    zone_text = render_zone(records)
    dkim_line = next(line for line in zone_text.splitlines() if "v=DKIM1" in line)
    assert dkim_line.count('"') >= 4  # a 2048-bit key needs two character-strings
    assert bind_check(tmp_path, zone_text) == {(r.name, r.rtype, r.value) for r in records}


def test_render_zone_separates_required_and_recommended():
    text = render_zone(zone_records(params()))
    required, recommended = text.split("\n\n")
    assert "v=DKIM1" in required and "v=spf1" not in required
    assert "v=spf1" in recommended and "SRV" in recommended and "MX" not in recommended


# --- comparing with DNS answers (pure) -----------------------------------------------------------


def answers_for(
    records: Sequence[Record], changes: Mapping[tuple[str, str], list[str]] = {}
) -> dict:
    """What a correct DNS would answer for ``records``, with the sets in ``changes`` (keyed by
    (label under the domain, "" for the domain itself; type)) replaced."""
    answers: dict[tuple[str, str], list[str]] = {}
    for r in records:
        answers.setdefault((r.name, r.rtype), []).append(r.value)
    for (label, rtype), values in changes.items():
        answers[(f"{label}.{D}." if label else f"{D}.", rtype)] = values
    return answers


def statuses(findings) -> dict[tuple[str, str], str]:
    return {(f.records[0].name, f.records[0].rtype): f.status for f in findings}


def test_compare_all_ok_despite_unrelated_txt_and_caa():
    records = zone_records(params())
    answers = answers_for(records)
    answers[(f"{D}.", "TXT")] = ["google-site-verification=abc", "v=spf1 a ~all"]
    answers[(f"{D}.", "CAA")] = ['0 issue "letsencrypt.org"', '0 iodef "mailto:x@example.org"']
    findings = compare_records(records, answers)
    assert set(statuses(findings).values()) == {"ok"}


def test_compare_tag_lists_ignore_order_and_spaces():
    records = zone_records(params())
    answers = answers_for(
        records,
        {
            ("_dmarc", "TXT"): ["v=DMARC1; aspf=s; adkim=s; p=reject"],
            ("opendkim._domainkey", "TXT"): ["v=DKIM1; k=rsa; s=email; t=s; p=PUBKEY"],
        },
    )
    assert set(statuses(compare_records(records, answers)).values()) == {"ok"}


def test_compare_reports_missing_different_and_errors():
    records = zone_records(params())
    answers: dict = answers_for(
        records,
        {
            ("", "A"): ["1.2.3.4", "9.9.9.9"],  # an extra address sends clients elsewhere
            ("", "TXT"): ["v=spf1 mx -all"],
            ("_dmarc", "TXT"): ["v=DMARC1;p=none"],
            ("opendkim._domainkey", "TXT"): [],
            ("", "MX"): [],
            ("www", "CNAME"): ["other.example.net."],
        },
    )
    answers[(f"_mta-sts.{D}.", "TXT")] = DnsError("timeout")
    got = statuses(compare_records(records, answers))
    assert got[(f"{D}.", "A")] == "different"
    assert got[(f"{D}.", "TXT")] == "different"
    assert got[(f"_dmarc.{D}.", "TXT")] == "different"
    assert got[(f"opendkim._domainkey.{D}.", "TXT")] == "missing"
    assert got[(f"{D}.", "MX")] == "missing"
    assert got[(f"www.{D}.", "CNAME")] == "different"
    assert got[(f"_mta-sts.{D}.", "TXT")] == "error"
    assert got[(f"{D}.", "AAAA")] == "ok"
    assert got[(f"_imaps._tcp.{D}.", "SRV")] == "ok"


def test_sts_id_from_txt():
    assert sts_id_from_txt(["other", "v=STSv1; id=20240101"]) == "20240101"
    assert sts_id_from_txt(["v=STSv1;id=abc "]) == "abc"
    assert sts_id_from_txt(["v=spf1 a ~all"]) is None
    assert sts_id_from_txt([]) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9.9.9.9", ("9.9.9.9", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("2620:fe::fe", ("2620:fe::fe", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("fe80::1%eth0", ("fe80::1%eth0", 53)),
    ],
)
def test_parse_resolver(text: str, expected: tuple[str, int]):
    assert parse_resolver(text) == expected


@pytest.mark.parametrize("text", ["dns.example", "1.2.3.4:0", "1.2.3.4:x", "[::1]"])
def test_parse_resolver_rejects(text: str):
    with pytest.raises(ValueError):
        parse_resolver(text)


def test_resolver_from_resolv_conf():
    text = "# generated\nsearch example.org\nnameserver 10.0.0.53\nnameserver 10.0.0.54\n"
    assert resolver_from_resolv_conf(text) == "10.0.0.53"
    assert resolver_from_resolv_conf("search x\n") == "127.0.0.1"


def test_public_source_address_is_global_or_none():
    for family in (socket.AF_INET, socket.AF_INET6):
        address = public_source_address(family)
        assert address is None or ipaddress.ip_address(address).is_global


# --- a fake DNS server --------------------------------------------------------------------------

RTYPE_CODES = {"A": 1, "CNAME": 5, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33, "CAA": 257}
RTYPE_NAMES = {code: name for name, code in RTYPE_CODES.items()}


def wire_name(name: str, qname: str) -> bytes:
    """``name`` in wire form; compressed (pointer into the question at offset 12) when it is
    ``qname`` or a suffix of it, so the client's decompression is exercised."""
    labels = [label for label in name.rstrip(".").split(".") if label]
    qlabels = [label for label in qname.rstrip(".").split(".") if label]
    for i in range(len(qlabels)):
        if qlabels[i:] == labels[-(len(qlabels) - i) :] and len(labels) >= len(qlabels) - i:
            prefix = labels[: len(labels) - (len(qlabels) - i)]
            offset = 12 + sum(1 + len(label) for label in qlabels[:i])
            return b"".join(bytes([len(x)]) + x.encode() for x in prefix) + struct.pack(
                "!H", 0xC000 | offset
            )
    return b"".join(bytes([len(x)]) + x.encode() for x in labels) + b"\x00"


def wire_rdata(rtype: str, value: str, qname: str) -> bytes:
    if rtype == "A":
        return socket.inet_pton(socket.AF_INET, value)
    if rtype == "AAAA":
        return socket.inet_pton(socket.AF_INET6, value)
    if rtype == "CNAME":
        return wire_name(value, qname)
    if rtype == "MX":
        preference, exchange = value.split()
        return struct.pack("!H", int(preference)) + wire_name(exchange, qname)
    if rtype == "SRV":
        priority, weight, port, target = value.split()
        return struct.pack("!3H", int(priority), int(weight), int(port)) + wire_name(target, qname)
    if rtype == "TXT":
        data = value.encode()
        return b"".join(
            bytes([len(data[i : i + 255])]) + data[i : i + 255]
            for i in range(0, max(len(data), 1), 255)
        )
    if rtype == "CAA":
        flags, tag, quoted = value.split(None, 2)
        return bytes([int(flags), len(tag)]) + tag.encode() + quoted.strip('"').encode()
    raise AssertionError(rtype)


class FakeDns:
    """Answers from ``zone`` {(name, type): [values]}; names absent from it get NXDOMAIN, names in
    ``servfail`` SERVFAIL. A UDP answer longer than ``udp_limit`` is sent truncated (TC), so the
    client must ask again over TCP on the same port. A CNAME is followed one step, like resolvers
    do."""

    def __init__(
        self,
        zone: Mapping[tuple[str, str], Sequence[str]],
        udp_limit: int = 1232,
        servfail: Sequence[str] = (),
    ):
        self.zone = {(name.lower(), rtype): list(values) for (name, rtype), values in zone.items()}
        self.udp_limit = udp_limit
        self.servfail = set(servfail)
        self.transports: list[str] = []
        self.stopping = threading.Event()
        for _ in range(50):  # bind UDP and TCP to the same free port
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        self.tcp.listen(8)
        self.udp.settimeout(0.1)
        self.tcp.settimeout(0.1)
        self.threads = [
            threading.Thread(target=self._serve_udp),
            threading.Thread(target=self._serve_tcp),
        ]
        for thread in self.threads:
            thread.start()

    def answer(self, query: bytes, transport: str) -> bytes:
        self.transports.append(transport)
        query_id, flags, _qd, _an, _ns, arcount = struct.unpack("!6H", query[:12])
        assert flags & 0x0100 and arcount == 1, "expected a recursive query with EDNS0"
        pos, labels = 12, []
        while query[pos]:
            labels.append(query[pos + 1 : pos + 1 + query[pos]].decode())
            pos += 1 + query[pos]
        qname = ".".join(labels).lower() + "."
        qtype = RTYPE_NAMES[struct.unpack("!H", query[pos + 1 : pos + 3])[0]]
        question = query[12 : pos + 5]
        names = {name for name, _ in self.zone}
        rcode, answers = 0, []
        if qname in self.servfail:
            rcode = 2
        elif qname not in names:
            rcode = 3
        else:
            owner = qname
            if (qname, "CNAME") in self.zone and qtype != "CNAME":
                target = self.zone[(qname, "CNAME")][0]
                answers.append((qname, "CNAME", target))
                owner = target
            answers += [(owner, qtype, v) for v in self.zone.get((owner, qtype), [])]
        body = b""
        for owner, rtype, value in answers:
            rdata = wire_rdata(rtype, value, qname)
            body += (
                wire_name(owner, qname)
                + struct.pack("!2HIH", RTYPE_CODES[rtype], 1, 300, len(rdata))
                + rdata
            )
        reply = (
            struct.pack("!6H", query_id, 0x8180 | rcode, 1, len(answers), 0, 0) + question + body
        )
        if transport == "udp" and len(reply) > self.udp_limit:
            return struct.pack("!6H", query_id, 0x8380, 1, 0, 0, 0) + question
        return reply

    def _serve_udp(self) -> None:
        while not self.stopping.is_set():
            try:
                query, client = self.udp.recvfrom(4096)
            except TimeoutError:
                continue
            self.udp.sendto(self.answer(query, "udp"), client)

    def _serve_tcp(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                length = struct.unpack("!H", conn.recv(2))[0]
                reply = self.answer(conn.recv(length), "tcp")
                conn.sendall(struct.pack("!H", len(reply)) + reply)

    def close(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=5)
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def fake_dns() -> Iterator[Callable[..., FakeDns]]:
    servers: list[FakeDns] = []

    def start(zone: Mapping[tuple[str, str], Sequence[str]], **kwargs: object) -> FakeDns:
        servers.append(FakeDns(zone, **kwargs))  # type: ignore[arg-type]
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def silent_udp() -> Iterator[int]:
    """A UDP port on 127.0.0.1 where nobody answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


# --- the stub resolver against the fake server ---------------------------------------------------


def test_resolver_decodes_every_record_type(fake_dns):
    long_text = "v=DKIM1;k=rsa;p=" + "A" * 600  # three character-strings
    zone = {
        (f"{D}.", "A"): ["1.2.3.4", "5.6.7.8"],
        (f"{D}.", "AAAA"): ["2001:db8::5"],
        (f"{D}.", "MX"): [f"10 {D}."],
        (f"{D}.", "TXT"): ["v=spf1 a ~all"],
        (f"{D}.", "CAA"): ['0 issue "letsencrypt.org"'],
        (f"www.{D}.", "CNAME"): [f"{D}."],
        (f"_imaps._tcp.{D}.", "SRV"): [f"0 1 993 {D}."],
        (f"k._domainkey.{D}.", "TXT"): [long_text],
    }
    server = fake_dns(zone)
    resolver = Resolver("127.0.0.1", server.port, timeout=2)
    for (name, rtype), values in zone.items():
        assert sorted(resolver.query(name.upper(), rtype)) == sorted(values), (name, rtype)
    assert resolver.query(f"nothing.{D}", "A") == []  # NXDOMAIN
    assert resolver.query(f"{D}", "SRV") == []  # name exists, no such data
    # a CNAME'd name: the resolver adds the target's A records, which are not the name's own
    assert resolver.query(f"www.{D}", "A") == []
    assert set(server.transports) == {"udp"}


def test_resolver_falls_back_to_tcp_for_truncated_answers(fake_dns):
    server = fake_dns({(f"{D}.", "TXT"): ["x" * 700]}, udp_limit=512)
    assert Resolver("127.0.0.1", server.port).query(D, "TXT") == ["x" * 700]
    assert server.transports == ["udp", "tcp"]


def test_resolver_reports_server_failure(fake_dns):
    server = fake_dns({}, servfail=[f"{D}."])
    with pytest.raises(DnsError, match="SERVFAIL"):
        Resolver("127.0.0.1", server.port).query(D, "A")


def test_resolver_gives_up_after_its_timeouts(silent_udp: int):
    started = time.monotonic()
    with pytest.raises(DnsError, match="no answer"):
        Resolver("127.0.0.1", silent_udp, timeout=0.2, attempts=2).query(D, "A")
    assert 0.35 < time.monotonic() - started < 2


def test_resolver_with_a_bad_address_reports_it():
    with pytest.raises(DnsError, match="not-an-address"):
        Resolver("not-an-address", timeout=0.2).query(D, "A")


def test_parse_response_rejects_foreign_and_malformed_replies():
    query = build_query(D, "A", 4711)
    reply = bytearray(query)
    reply[2] |= 0x80  # QR: a reply with no answers
    assert parse_response(bytes(reply), 4711, D, "A") == []
    with pytest.raises(DnsError, match="does not belong"):
        parse_response(bytes(reply), 4712, D, "A")
    with pytest.raises(DnsError, match="another question"):
        parse_response(bytes(reply), 4711, f"www.{D}", "A")
    looped = struct.pack("!6H", 4711, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c"  # name pointing at itself
    with pytest.raises(DnsError, match="loop"):
        parse_response(looped, 4711, D, "A")
    with pytest.raises(DnsError, match="cut short"):
        parse_response(bytes(reply[:20]), 4711, D, "A")
    question = query[12 : 12 + len(D) + 2 + 4]
    bad_a = struct.pack("!6H", 4711, 0x8180, 1, 1, 0, 0) + question
    bad_a += b"\xc0\x0c" + struct.pack("!2HIH", 1, 1, 300, 3) + b"\x01\x02\x03"  # 3-byte A
    with pytest.raises(DnsError, match="malformed A"):
        parse_response(bad_a, 4711, D, "A")


# --- the command line -----------------------------------------------------------------------------


def cli_args(make_ini: Callable[..., Path], dkim_keys, *extra: str) -> list[str]:
    return [
        str(make_ini()),
        "--ipv4",
        "1.2.3.4",
        "--ipv6",
        "2001:db8::5",
        "--dkim-key",
        str(dkim_keys["pkcs8"]),
        *extra,
    ]


def test_cli_prints_the_zone(
    make_ini, dkim_keys, capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    assert (
        dnszone.main(cli_args(make_ini, dkim_keys, "--sts-id", "7", "--acme-account-url", ACME_URL))
        == 0
    )
    zone_text = capsys.readouterr().out
    records = bind_check(tmp_path, zone_text)
    assert (f"{D}.", "A", "1.2.3.4") in records
    assert (f"_mta-sts.{D}.", "TXT", "v=STSv1; id=7") in records
    assert (
        f"opendkim._domainkey.{D}.",
        "TXT",
        f"v=DKIM1;k=rsa;p={dkim_keys['p']};s=email;t=s",
    ) in records
    assert len(records) == 15


def test_cli_check_passes_against_a_dns_serving_the_zone(
    make_ini, dkim_keys, fake_dns, capsys, tmp_path: Path
):
    # the zone as BIND reads it, served by the fake DNS: every record must check out
    assert dnszone.main(cli_args(make_ini, dkim_keys, "--sts-id", "7")) == 0
    zone: dict[tuple[str, str], list[str]] = {}
    for name, rtype, value in bind_check(tmp_path, capsys.readouterr().out):
        zone.setdefault((name, rtype), []).append(value)
    server = fake_dns(zone)
    # without --sts-id the id is taken from DNS
    assert (
        dnszone.main(
            cli_args(make_ini, dkim_keys, "--check", "--resolver", f"127.0.0.1:{server.port}")
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "All DNS records are in place." in out
    assert "v=STSv1; id=7" in out
    assert not re.search(r"MISSING|DIFFERENT|ERROR", out)


def test_cli_check_fails_on_a_wrong_required_record(make_ini, dkim_keys, fake_dns, capsys):
    records = zone_records(params(dkim_keys["p"], sts_id="7"))
    zone = answers_for(
        records,
        {
            ("opendkim._domainkey", "TXT"): ["v=DKIM1;k=rsa;p=OLDKEY;s=email;t=s"],
            ("", "TXT"): ["v=spf1 -all"],
        },
    )
    server = fake_dns(zone)
    argv = cli_args(make_ini, dkim_keys, "--check", "--resolver", f"127.0.0.1:{server.port}")
    assert dnszone.main(argv) == 1
    out = capsys.readouterr().out
    assert re.search(rf"DIFFERENT \(required\)\s+opendkim\._domainkey\.{re.escape(D)}\.", out)
    assert 'DNS answers: "v=DKIM1;k=rsa;p=OLDKEY;s=email;t=s"' in out
    assert "DIFFERENT (recommended)" in out
    assert "1 required record set(s) missing or wrong" in out


def test_cli_check_only_recommended_wrong_exits_zero(make_ini, dkim_keys, fake_dns, capsys):
    records = zone_records(params(dkim_keys["p"], sts_id="7"))
    zone = answers_for(records, {("_imap._tcp", "SRV"): []})
    server = fake_dns(zone)
    assert (
        dnszone.main(
            cli_args(make_ini, dkim_keys, "--check", "--resolver", f"127.0.0.1:{server.port}")
        )
        == 0
    )
    out = capsys.readouterr().out
    assert re.search(rf"MISSING \(recommended\)\s+_imap\._tcp\.{re.escape(D)}\.", out)


def test_cli_check_with_an_unresponsive_resolver_fails_in_bounded_time(
    make_ini, dkim_keys, silent_udp, capsys
):
    started = time.monotonic()
    argv = cli_args(
        make_ini, dkim_keys, "--check", "--resolver", f"127.0.0.1:{silent_udp}", "--timeout", "0.2"
    )
    assert dnszone.main(argv) == 1
    # one lookup for the MTA-STS id, then all record sets in parallel: about 2 x 2 x 0.2 s
    assert time.monotonic() - started < 5
    out = capsys.readouterr().out
    assert "ERROR (required)" in out and "no answer" in out


def test_cli_detects_addresses_or_asks_for_them(make_ini, dkim_keys, monkeypatch, capsys):
    detected = {socket.AF_INET: "192.0.2.10", socket.AF_INET6: None}
    monkeypatch.setattr(dnszone, "public_source_address", lambda family: detected[family])
    argv = [str(make_ini()), "--dkim-key", str(dkim_keys["txt"]), "--sts-id", "1"]
    assert dnszone.main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r" A +192\.0\.2\.10$", out, re.MULTILINE) and " AAAA " not in out

    detected[socket.AF_INET] = None
    with pytest.raises(SystemExit) as exit_info:
        dnszone.main(argv)
    assert exit_info.value.code == 2
    assert "pass --ipv4" in capsys.readouterr().err


def test_cli_refuses_ipv6_when_disabled_and_unreadable_keys(
    make_ini, dkim_keys, capsys, tmp_path: Path
):
    with pytest.raises(SystemExit):
        dnszone.main(cli_args(lambda: make_ini(disable_ipv6="true"), dkim_keys, "--sts-id", "1"))
    assert "disable_ipv6" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        dnszone.main(
            [
                str(make_ini()),
                "--ipv4",
                "1.2.3.4",
                "--dkim-key",
                str(tmp_path / "absent"),
                "--sts-id",
                "1",
            ]
        )
    assert "cannot read the DKIM key" in capsys.readouterr().err


def test_console_script_is_installed(make_ini, dkim_keys):
    script = Path(sys.executable).with_name("chatmail-dns-zone")
    assert script.exists(), (
        "pip install the chatmaild package: its chatmail-dns-zone script is missing"
    )
    out = run(str(script), *cli_args(make_ini, dkim_keys, "--sts-id", "1"))
    assert f"www.{D}." in out and "CNAME" in out
