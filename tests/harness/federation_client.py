#!/usr/bin/env python3
"""Client side of the federation tests (tests/harness/test_federation_compat.py): run inside the
harness's client namespace.

    local-relay exec -- VENV/bin/python tests/harness/federation_client.py CHECK ARGS... --ca TRUST

Each check prints its findings as one JSON object on the last line; the pytest side judges them.

deliver FROM TO [--timeout S] [--header H] [--part-header H]
                      an encrypted message from a new account on relay FROM (submission 587) to
                      a new account on relay TO; whether it arrived within S seconds, intact
                      (body byte for byte, From/To/Message-ID/Content-Type), and its headers.
                      --header adds header line H to the message, --part-header to its encrypted
                      part (a MIME part header)
submit DOMAIN TO      an encrypted message from a new account on DOMAIN to address TO (any
                      address: the result shows in the relays' logs)
rcpt-limit DOMAIN TO --count N   MAIL and N RCPTs (addresses on TO) on DOMAIN's submission port:
                      how many were accepted, and the first refusal
ehlo DOMAIN PORT      the EHLO keywords of DOMAIN's port (STARTTLS first on 25 and 587)
post DOMAIN [--method M] [--from A] [--to A ...] [--body encrypted|plain|size:N] [--account]
                      one request to https://DOMAIN/mxdeliv: status and answer; --account
                      creates an account on DOMAIN and adds it as a recipient
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from pathlib import Path

from chatmaild import testmail

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "nixos-tests" / "scenarios"))
import scenario_lib as lib  # noqa: E402

TIMEOUT = 30.0


def relay(args: argparse.Namespace, domain: str) -> lib.Relay:
    return lib.Relay(domain, args.ca, args.helo)


def with_part_header(message: bytes, line: str) -> bytes:
    """MESSAGE with LINE among the header lines of its encrypted (second) MIME part."""
    marker = b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
    assert marker in message
    return message.replace(marker, marker + line.encode() + b"\r\n")


def deliver(args: argparse.Namespace) -> dict:
    source, target = relay(args, args.source), relay(args, args.target)
    sender, recipient = lib.create_account(source), lib.create_account(target)
    message = testmail.to_bytes(testmail.make_encrypted_message(
        sender.addr, [recipient.addr], extra_headers=[args.header] if args.header else []))
    if args.part_header:
        message = with_part_header(message, args.part_header)
    lib.submit(source, sender, [recipient.addr], message, mail_options=lib.DELTACHAT_MAIL_OPTIONS)
    found = {"sender": sender.addr, "recipient": recipient.addr,
             "message_id": lib.message_id(message), "delivered": False}
    try:
        delivered = lib.wait_for_message(target, recipient, lib.message_id(message),
                                         timeout=args.timeout)
    except lib.ScenarioFailure:
        return found
    try:
        lib.assert_delivered_intact(message, delivered, f"{args.source} -> {args.target}")
        intact = ""
    except lib.ScenarioFailure as failure:
        intact = str(failure)
    head, _, body = delivered.partition(b"\r\n\r\n")
    return {**found, "delivered": True, "not_intact": intact,
            "headers": head.decode(errors="replace"), "body": body.decode(errors="replace")}


def submit(args: argparse.Namespace) -> dict:
    source = relay(args, args.domain)
    sender = lib.create_account(source)
    message = lib.encrypted_message(sender.addr, [args.to])
    lib.submit(source, sender, [args.to], message)
    return {"sender": sender.addr, "message_id": lib.message_id(message)}


def rcpt_limit(args: argparse.Namespace) -> dict:
    source = relay(args, args.domain)
    sender = lib.create_account(source)
    accepted, refusal = 0, None
    with lib.smtp_connect(source, 587) as client:
        client.login(sender.addr, sender.password)
        client.mail(sender.addr)
        for i in range(args.count):
            code, text = client.rcpt(f"r{i:08d}@{args.to}")
            if code != 250:
                refusal = {"index": i, "code": code, "reply": text.decode(errors="replace")}
                break
            accepted += 1
        client.rset()
    return {"accepted": accepted, "refusal": refusal}


def ehlo(args: argparse.Namespace) -> dict:
    target = relay(args, args.domain)
    with lib.smtp_connect(target, args.port) as client:
        client.ehlo(args.helo or "client.test")
        return {"keywords": sorted(client.esmtp_features)}


def post(args: argparse.Namespace) -> dict:
    target = relay(args, args.domain)
    recipients = list(args.to)
    if args.account:
        recipients.append(lib.create_account(target).addr)
    sender = args.sender or "someone@chat.test"
    if args.body == "encrypted":
        body = lib.encrypted_message(sender, recipients)
    elif args.body == "plain":
        body = lib.plain_message(sender, recipients)
    else:
        body = b"x" * int(args.body.removeprefix("size:"))
    connection = http.client.HTTPSConnection(args.domain, 443, context=target.tls(),
                                             timeout=TIMEOUT)
    connection.putrequest(args.method, "/mxdeliv")
    if args.sender:
        connection.putheader("X-Mail-From", args.sender)
    for rcpt in recipients:
        connection.putheader("X-Mail-To", rcpt)
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    return {"status": response.status, "reply": response.read().decode(errors="replace").strip(),
            "recipients": recipients}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    lib.relay_arguments(parser)
    checks = parser.add_subparsers(dest="check", required=True)
    sub = checks.add_parser("deliver")
    sub.add_argument("source")
    sub.add_argument("target")
    sub.add_argument("--timeout", type=float, default=lib.DELIVERY_TIMEOUT)
    sub.add_argument("--header")
    sub.add_argument("--part-header")
    sub.set_defaults(handler=deliver)
    sub = checks.add_parser("submit")
    sub.add_argument("domain")
    sub.add_argument("to")
    sub.set_defaults(handler=submit)
    sub = checks.add_parser("rcpt-limit")
    sub.add_argument("domain")
    sub.add_argument("to")
    sub.add_argument("--count", type=int, required=True)
    sub.set_defaults(handler=rcpt_limit)
    sub = checks.add_parser("ehlo")
    sub.add_argument("domain")
    sub.add_argument("port", type=int)
    sub.set_defaults(handler=ehlo)
    sub = checks.add_parser("post")
    sub.add_argument("domain")
    sub.add_argument("--method", default="POST")
    sub.add_argument("--from", dest="sender")
    sub.add_argument("--to", action="append", default=[])
    sub.add_argument("--body", default="encrypted")
    sub.add_argument("--account", action="store_true")
    sub.set_defaults(handler=post)
    args = parser.parse_args()
    started = time.monotonic()
    result = args.handler(args)
    result["seconds"] = round(time.monotonic() - started, 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
