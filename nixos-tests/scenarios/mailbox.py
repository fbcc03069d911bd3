"""Mailbox steps for tests that check the results themselves (tests/harness/test_mailbox_lifecycle.py,
nixos-tests/basic.nix): each subcommand does one thing against a relay and prints its findings as
one JSON object.

    mailbox.py --domain D [--ca F] [--helo H] set-token ADDR PASSWORD TOKEN
    mailbox.py --domain D [--ca F] [--helo H] get-tokens ADDR PASSWORD
    mailbox.py --domain D [--ca F] [--helo H] server-metadata ADDR PASSWORD KEY...
    mailbox.py --domain D [--ca F] [--helo H] inbox ADDR PASSWORD     (messages, quota)
    mailbox.py --domain D [--ca F] [--helo H] send ADDR PASSWORD TO [--count N] [--size BYTES]
    mailbox.py notify-endpoint --port P --record FILE                 (fake notification service)

`server-metadata` reads server annotations (`GETMETADATA "" KEY…`, e.g. /shared/admin) and prints
each value, null for NIL; `send` submits N encrypted messages on one authenticated connection and
reports each reply;
`notify-endpoint` answers every POST with 200 and appends {"path", "body"} to FILE (one JSON
object a line) until it is terminated.
"""

from __future__ import annotations

import argparse
import http.server
import json
import smtplib
import sys
from pathlib import Path

from chatmaild import testmail
from scenario_lib import Account, Relay, imap_login, relay_arguments, smtp_connect

TOKEN_KEY = "/private/devicetoken"


def as_text(data: list) -> str:
    """Untagged reply data as text (literals arrive as (prefix, value) tuples)."""
    parts = []
    for item in data:
        for piece in item if isinstance(item, tuple) else (item,):
            parts.append(piece.decode(errors="replace") if isinstance(piece, bytes) else str(piece))
    return " ".join(parts)


def set_token(relay: Relay, account: Account, token: str) -> dict:
    client = imap_login(relay, account)
    try:
        capabilities = [c.decode() for c in client.capabilities()]
        # raises unless the server answers OK
        client._raw_command_untagged(b"SETMETADATA", [b"INBOX", f'({TOKEN_KEY} "{token}")'.encode()],
                                     uid=False)
        return {"capabilities": capabilities}
    finally:
        client.logout()


def get_tokens(relay: Relay, account: Account) -> dict:
    client = imap_login(relay, account)
    try:
        data = client._raw_command_untagged(b"GETMETADATA", [b"INBOX", TOKEN_KEY.encode()],
                                            response_name="METADATA", uid=False)
        return {"metadata": as_text(data)}
    finally:
        client.logout()


def metadata_values(data: list) -> dict[str, str | None]:
    """KEY -> value of a GETMETADATA answer; values come as literals, quoted strings or NIL."""
    values: dict[str, str | None] = {}
    for item in data:
        if isinstance(item, tuple):  # (b'"" (/shared/admin {26}', b'mailto:…')
            key = item[0].decode().split("(", 1)[1].split()[0]
            values[key] = item[1].decode()
        elif item.strip() != b")":  # b'"" (/shared/comment NIL)' or a quoted value
            key, _, value = item.decode().split("(", 1)[1].rstrip(")").partition(" ")
            values[key] = None if value == "NIL" else value.strip('"')
    return values


def server_metadata(relay: Relay, account: Account, keys: list[str]) -> dict:
    client = imap_login(relay, account)
    try:
        found = {}
        for key in keys:  # one key per command: Dovecot answers NIL ones in the same line
            data = client._raw_command_untagged(b"GETMETADATA", [b'""', key.encode()],
                                                response_name="METADATA", uid=False)
            found.update(metadata_values(data))
        return {"metadata": found}
    finally:
        client.logout()


def inbox(relay: Relay, account: Account) -> dict:
    client = imap_login(relay, account)
    try:
        client.select_folder("INBOX")  # read-write, as a client: seen messages move to cur/
        uids = client.search(["ALL"])
        fetched = client.fetch(uids, ["ENVELOPE", "RFC822.SIZE"]) if uids else {}
        messages = [{"message_id": (data[b"ENVELOPE"].message_id or b"").decode(),
                     "from": str(data[b"ENVELOPE"].from_[0]) if data[b"ENVELOPE"].from_ else "",
                     "subject": (data[b"ENVELOPE"].subject or b"").decode(errors="replace"),
                     "size": data[b"RFC822.SIZE"]} for data in fetched.values()]
        roots, quotas = client.get_quota_root("INBOX")
        bodies = [data[b"BODY[TEXT]"].decode(errors="replace")
                  for data in (client.fetch(uids, ["BODY.PEEK[TEXT]"]).values() if uids else [])]
        return {"messages": messages, "bodies": bodies,
                "quota_roots": list(roots.quota_roots),
                "quotas": [{"root": q.quota_root, "resource": q.resource, "usage": q.usage,
                            "limit": q.limit} for q in quotas]}
    finally:
        client.logout()


def send(relay: Relay, account: Account, to: str, count: int, size: int) -> dict:
    replies = []
    with smtp_connect(relay, 587) as client:
        client.login(account.addr, account.password)
        for _ in range(count):
            message = testmail.to_bytes(testmail.make_encrypted_message(
                account.addr, [to], payload_size=size))
            try:
                refused = client.sendmail(account.addr, [to], message)
                replies.append({"code": 250, "refused": {k: list(v) for k, v in refused.items()}})
            except smtplib.SMTPRecipientsRefused as error:
                # Postfix reports what its before-queue filter said to MAIL at RCPT
                ((code, message),) = error.recipients.values()
                replies.append({"code": code, "message": message.decode()})
                client.rset()
            except smtplib.SMTPSenderRefused as error:
                replies.append({"code": error.smtp_code, "message": error.smtp_error.decode()})
                client.rset()
            except smtplib.SMTPResponseException as error:
                replies.append({"code": error.smtp_code, "message": error.smtp_error.decode()})
                client.rset()
    return {"replies": replies}


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    record: Path

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode()
        with open(self.record, "a") as out:
            out.write(json.dumps({"path": self.path, "body": body}) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args) -> None:
        print(format % args, file=sys.stderr, flush=True)


def notify_endpoint(port: int, record: Path) -> None:
    RecordingHandler.record = record
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), RecordingHandler)
    print(f"listening on {port}", flush=True)
    server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain")
    relay_arguments(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("set-token", "get-tokens", "server-metadata", "inbox", "send"):
        command = commands.add_parser(name)
        command.add_argument("addr")
        command.add_argument("password")
        if name == "set-token":
            command.add_argument("token")
        if name == "server-metadata":
            command.add_argument("keys", nargs="+")
        if name == "send":
            command.add_argument("to")
            command.add_argument("--count", type=int, default=1)
            command.add_argument("--size", type=int, default=600)
    endpoint = commands.add_parser("notify-endpoint")
    endpoint.add_argument("--port", type=int, required=True)
    endpoint.add_argument("--record", type=Path, required=True)
    args = parser.parse_args()

    if args.command == "notify-endpoint":
        notify_endpoint(args.port, args.record)
        return 0
    relay = Relay(args.domain, args.ca, args.helo)
    account = Account(args.addr, args.password)
    if args.command == "set-token":
        result = set_token(relay, account, args.token)
    elif args.command == "get-tokens":
        result = get_tokens(relay, account)
    elif args.command == "server-metadata":
        result = server_metadata(relay, account, args.keys)
    elif args.command == "inbox":
        result = inbox(relay, account)
    else:
        result = send(relay, account, args.to, args.count, args.size)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
