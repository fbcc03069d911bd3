"""Inside the container, as the vmail user (the identity of Dovecot's processes that use the
sockets): speaks to each running chatmaild unit the way its real peer does and prints one JSON
object with what came back. tests/systemd/test_units_under_systemd.py judges it.

    unit_probe.py JSON   (mailboxes_dir, the sockets and ports: see main())

Stand-ins for the peers that are not there: Postfix's side of the milter protocol
(chatmaild.milter.MilterClient) for filtermail, an SMTP sink where chatmail-mxdeliv hands in mail
from /mxdeliv (Postfix's loopback smtpd), and an HTTP endpoint on the push port (the
notification service).
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import smtplib
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

from aiosmtpd.controller import Controller

from chatmaild import testmail
from chatmaild.dictclient import DictClient
from chatmaild.dictproto import request_line
from chatmaild.metadata import TURN_KEY
from chatmaild.milter import MilterClient

GUID = "5cbe730f146fea6535be0d003dd4fc98"
WAIT = 20.0
OLD = time.time() - 40 * 86400  # older than every delete_*_after default


class Sink:
    def __init__(self) -> None:
        self.received: list[dict] = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "bytes": len(envelope.original_content)})
        return "250 OK"


class PushEndpoint(http.server.BaseHTTPRequestHandler):
    bodies: list[str] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {WAIT} s")
        time.sleep(0.05)


def new_account(newemail_port: int) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{newemail_port}/new", method="POST")
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        return {"status": response.status, **json.loads(response.read())}


def doveauth(socket_path: str, addr: str, password: str) -> dict:
    with DictClient(socket_path, timeout=WAIT) as client:
        created = client.passdb(addr, password)
        again = client.passdb(addr, password)
        userdb = client.userdb(addr)
    return {"created": created, "same_hash_again": again == created, "userdb": userdb}


def metadata(socket_path: str, addr: str, token: str) -> dict:
    def transaction(client: DictClient, tid: str, key: str, value: str) -> bytes:
        client.send(request_line("B", tid, addr) + request_line("S", tid, key, value))
        return client.request(request_line("C", tid))

    with DictClient(socket_path, timeout=WAIT) as client:
        stored = transaction(client, "1", f"priv/{GUID}/devicetoken", token)
        looked_up = client.request(request_line("L", f"priv/{GUID}/devicetoken", addr))
        # what Dovecot's LMTP push script sets on delivery: the daemon notifies every token
        notified = transaction(client, "2", f"priv/{GUID}/messagenew", "")
        # TURN credentials, which chatmail-metadata fetches from chatmail-turn-credentials
        turn = client.request(request_line("L", f"shared/{GUID}/{TURN_KEY}", addr))
    wait_for(lambda: PushEndpoint.bodies, "push notification")
    return {"set": stored.decode(), "lookup": looked_up.decode(), "messagenew": notified.decode(),
            "pushed": PushEndpoint.bodies, "turn": turn.decode()}


def turn_credentials(socket_path: str) -> str:
    """What chatmail-turn-credentials answers on its socket: one username:password line."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(WAIT)
        sock.connect(socket_path)
        return sock.makefile("rb").readline().decode()


def filtermail(socket_path: str, sender: str, recipient: str) -> dict:
    """An encrypted and a cleartext mail through filtermail's milter, as Postfix passes them:
    250 for an accepted one, else the reply's code."""
    encrypted = testmail.to_bytes(testmail.make_encrypted_message(sender, [recipient]))
    cleartext = testmail.to_bytes(testmail.make_plain_message(sender, [recipient]))
    client = MilterClient(socket_path, timeout=WAIT)
    answers = [client.transaction(sender, [recipient], message, login=sender) for message in (encrypted, cleartext)]
    client.close()
    return {"replies": [250 if a.accepted else int(a.text[:3]) for a in answers],
            "texts": [a.text for a in answers]}


def mxdeliv(port: int, sender: str, recipient: str, sink: Sink) -> dict:
    """A POST to /mxdeliv as nginx passes it on: one SMTP transaction with Postfix's port."""
    message = testmail.to_bytes(testmail.make_encrypted_message(sender, [recipient]))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    connection.request("POST", "/mxdeliv", message, {"X-Mail-From": sender, "X-Mail-To": recipient})
    response = connection.getresponse()
    answer = {"status": response.status, "reply": response.read().decode().strip()}
    wait_for(lambda: sink.received, "message handed in from /mxdeliv")
    return {**answer, "handed_in": sink.received, "bytes": len(message)}


def mxdeliv_outgoing(port: int, sender: str) -> dict:
    """Postfix's fallback relay: a message for an IP literal goes to https://127.0.0.1/mxdeliv,
    where nothing listens here, so the reply tells how far the daemon got."""
    message = testmail.to_bytes(testmail.make_encrypted_message(sender, ["x@[127.0.0.1]"]))
    with smtplib.SMTP("127.0.0.1", port, local_hostname="probe.test", timeout=WAIT) as client:
        try:
            client.sendmail(sender, ["x@[127.0.0.1]"], message)
            return {"code": 250}
        except smtplib.SMTPDataError as e:
            return {"code": e.smtp_code, "reply": e.smtp_error.decode()}


def expiry_files(mailbox: Path) -> dict:
    """A message too old to keep and a fresh one in the account's maildir (chatmail-expire runs
    after this probe)."""
    (mailbox / "cur").mkdir(exist_ok=True)
    old, fresh = mailbox / "cur" / "1000.old:2,S", mailbox / "cur" / "2000.fresh:2,S"
    old.write_bytes(b"Subject: old\n\nold\n")
    fresh.write_bytes(b"Subject: fresh\n\nfresh\n")
    os.utime(old, (OLD, OLD))
    return {"old": str(old), "fresh": str(fresh)}


def main() -> int:
    given = json.loads(sys.argv[1])
    sink = Sink()
    postfix = Controller(sink, hostname="127.0.0.1", port=given["postfix_mxdeliv_port"])
    postfix.start()
    push = http.server.ThreadingHTTPServer(("127.0.0.1", given["push_port"]), PushEndpoint)
    threading.Thread(target=push.serve_forever, daemon=True).start()
    try:
        account = new_account(given["newemail_port"])
        addr = account["email"]
        result = {
            "newemail": account,
            "doveauth": doveauth(given["doveauth_socket"], addr, account["password"]),
            "metadata": metadata(given["metadata_socket"], addr, "probe-token-1"),
            "turn": turn_credentials(given["turn_socket"]),
            "filtermail": filtermail(given["filtermail_socket"], addr, "someone@elsewhere.test"),
            "filtermail_incoming": filtermail(given["filtermail_incoming_socket"],
                                              "someone@elsewhere.test", addr),
            "mxdeliv": mxdeliv(given["mxdeliv_port"], "someone@elsewhere.test", addr, sink),
            "mxdeliv_outgoing": mxdeliv_outgoing(given["mxdeliv_outgoing_port"], addr),
            "mailbox": str(Path(given["mailboxes_dir"]) / addr),
        }
        result["expire"] = expiry_files(Path(result["mailbox"]))
    finally:
        push.shutdown()
        postfix.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
