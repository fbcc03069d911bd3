#!/usr/bin/env python3
"""Client side of tests/harness/test_mail_policy.py, run in the harness' client namespace; each
command prints one JSON object on its last line (the test judges it).

    policy_client.py replies --domain D --ca CA
        the reply codes and texts a submitting client gets: cleartext, a forged From header, a
        MAIL FROM that is not the login, the eleventh mail of a burst, a mail over the size limit
    policy_client.py dkim --domain A --other B --key KEYFILE --ca CA
        mail to A over port 25 as another relay sends it: unsigned, signed with B's real key under
        a From of A (forged), signed with B's key under a From of B (with a MAIL FROM that differs),
        an unsigned MAILER-DAEMON report; then what A delivered
    policy_client.py federate --from A --to B --ca CA
        one encrypted mail each way and the recipient's copy as IMAP hands it out
    policy_client.py bounce --from A --to B --ca CA --size N
        mails of N bytes from A to one account of B until B's quota refuses one; the bounce that
        reaches the sender on A
"""

from __future__ import annotations

import argparse
import json
import smtplib
import sys
import time
from pathlib import Path

import dkim

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "nixos-tests" / "scenarios"))

import scenario_lib as lib  # noqa: E402
from chatmaild import testmail  # noqa: E402

SELECTOR = b"opendkim"
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"content-type", b"mime-version"]
BOUNCE_TIMEOUT = 60.0


def outcome(send) -> dict:  # type: ignore[no-untyped-def]
    """{code, text} of what the server answered; 250 when it took the mail."""
    try:
        send()
    except smtplib.SMTPRecipientsRefused as error:
        (code, text), = error.recipients.values()
        return {"code": code, "text": text.decode(errors="replace")}
    except smtplib.SMTPResponseException as error:
        return {"code": error.smtp_code, "text": error.smtp_error.decode(errors="replace")}
    return {"code": 250, "text": ""}


def replies(args: argparse.Namespace) -> dict:
    relay = lib.Relay(args.domain, args.ca)
    alice, bob = lib.create_account(relay), lib.create_account(relay)
    result = {
        "cleartext": outcome(lambda: lib.submit(relay, alice, [bob.addr], lib.plain_message(alice.addr, [bob.addr]))),
        "forged_from": outcome(lambda: lib.submit(relay, alice, [bob.addr], lib.encrypted_message(bob.addr, [bob.addr]))),
        "sender_not_login": outcome(lambda: lib.submit(relay, alice, [bob.addr], lib.encrypted_message(bob.addr, [alice.addr]),
                                                        sender=bob.addr)),
        "too_large": outcome(lambda: lib.submit(relay, alice, [bob.addr], testmail.to_bytes(
            testmail.make_encrypted_message(alice.addr, [bob.addr], payload_size=args.size_limit)))),
    }
    burst = []
    carol = lib.create_account(relay)
    with lib.smtp_connect(relay, 587) as client:
        client.login(carol.addr, carol.password)
        for _ in range(args.burst + 1):
            burst.append(outcome(lambda: client.sendmail(carol.addr, [bob.addr],
                                                         lib.encrypted_message(carol.addr, [bob.addr]))))
    result["burst"] = burst
    return result


def sign(message: bytes, key: bytes, domain: str) -> bytes:
    return dkim.sign(message, SELECTOR, domain.encode(), key, canonicalize=(b"relaxed", b"simple"),
                     include_headers=SIGNED_HEADERS) + message


def port25(relay: lib.Relay, mail_from: str, recipient: str, message: bytes) -> dict:
    def send() -> None:
        with lib.smtp_connect(relay, 25) as client:
            client.sendmail(mail_from, [recipient], message)
    return outcome(send)


def dkim_policy(args: argparse.Namespace) -> dict:
    relay = lib.Relay(args.domain, args.ca)
    key = Path(args.key).read_bytes()
    target = lib.create_account(relay)
    own, other = f"mallory1@{args.domain}", f"sender99@{args.other}"
    report = testmail.to_bytes(testmail.make_mailer_daemon_report(f"MAILER-DAEMON@{args.other}", target.addr))
    genuine = lib.encrypted_message(other, [target.addr])
    result = {
        "unsigned": port25(relay, other, target.addr, lib.encrypted_message(other, [target.addr])),
        "forged_from_signed_by_other": port25(relay, own, target.addr,
                                              sign(lib.encrypted_message(own, [target.addr]), key, args.other)),
        "forged_from_claiming_own_domain": port25(relay, own, target.addr,
                                                  sign(lib.encrypted_message(own, [target.addr]), key, args.domain)),
        "unsigned_mailer_daemon": port25(relay, "", target.addr, report),
        "signed_mailer_daemon": port25(relay, "", target.addr, sign(report, key, args.other)),
        "tampered": port25(relay, other, target.addr,
                           sign(lib.encrypted_message(other, [target.addr]), key, args.other) + b"appended\r\n"),
        # a list-style envelope sender that is not the From address
        "genuine": port25(relay, f"bounces+x@{args.other}", target.addr, sign(genuine, key, args.other)),
    }
    delivered = lib.wait_for_message(relay, target, lib.message_id(genuine))
    client = lib.imap_login(relay, target)
    client.select_folder("INBOX", readonly=True)
    result["delivered_count"] = len(client.search(["ALL"]))
    client.logout()
    result["genuine_return_path"] = lib.header(delivered, "Return-Path")
    return result


def federate(args: argparse.Namespace) -> dict:
    first, second = lib.Relay(args.first, args.ca), lib.Relay(args.second, args.ca)
    accounts = {first: lib.create_account(first), second: lib.create_account(second)}
    copies = {}
    for source, target in ((first, second), (second, first)):
        sender, recipient = accounts[source], accounts[target]
        sent = lib.encrypted_message(sender.addr, [recipient.addr])
        lib.submit(source, sender, [recipient.addr], sent)
        copies[f"{source.domain}->{target.domain}"] = lib.wait_for_message(target, recipient, lib.message_id(sent)).decode(
            errors="replace")
    return {"copies": copies}


def bounce(args: argparse.Namespace) -> dict:
    first, second = lib.Relay(args.first, args.ca), lib.Relay(args.second, args.ca)
    sender, recipient = lib.create_account(first), lib.create_account(second)
    client = lib.imap_login(first, sender)
    sent = 0
    deadline = time.monotonic() + BOUNCE_TIMEOUT
    try:
        while time.monotonic() < deadline:
            message = testmail.to_bytes(testmail.make_encrypted_message(sender.addr, [recipient.addr],
                                                                        payload_size=args.size))
            lib.submit(first, sender, [recipient.addr], message)
            sent += 1
            for _ in range(20):
                client.select_folder("INBOX", readonly=True)
                uids = client.search(["ALL"])
                if uids:
                    (data,) = client.fetch(uids[:1], ["RFC822"]).values()
                    return {"sent": sent, "sender": sender.addr, "notice": data[b"RFC822"].decode(errors="replace")}
                time.sleep(0.25)
        return {"sent": sent, "sender": sender.addr, "notice": None}
    finally:
        client.logout()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["replies", "dkim", "federate", "bounce"])
    parser.add_argument("--domain")
    parser.add_argument("--other")
    parser.add_argument("--from", dest="first")
    parser.add_argument("--to", dest="second")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--size-limit", type=int, default=1_000_000)
    args = parser.parse_args()
    commands = {"replies": replies, "dkim": dkim_policy, "federate": federate, "bounce": bounce}
    print(json.dumps(commands[args.command](args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
