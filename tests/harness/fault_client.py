#!/usr/bin/env python3
"""Client side of tests/harness/test_faults.py, run in the harness' client namespace.

    fault_client.py stream --domain D [--recipient-domain R] --ca CA --count N --interval S --ready FILE
        creates senders (on D) and recipients (on R, default D), touches FILE, then submits N
        encrypted messages, one every S seconds, round robin; prints one JSON object: accepted
        Message-IDs and recipients, reply codes of the deferred and refused ones.
    fault_client.py logins --domain D --ca CA --concurrent N
        N concurrent first logins of one new account with one password, then N of another new
        account with N different passwords; prints which logins were accepted (JSON).
"""

from __future__ import annotations

import argparse
import json
import smtplib
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "nixos-tests" / "scenarios"))

import scenario_lib as lib  # noqa: E402
from imapclient.exceptions import LoginError  # noqa: E402

SENDERS = 8  # each stays well below the default rate limit (60/min, burst 10)
RECIPIENTS = 4


def stream(args: argparse.Namespace) -> dict:
    relay = lib.Relay(args.domain, args.ca)
    senders = [lib.create_account(relay) for _ in range(SENDERS)]
    receiving = lib.Relay(args.recipient_domain or args.domain, args.ca)
    recipients = [lib.create_account(receiving) for _ in range(RECIPIENTS)]
    Path(args.ready).write_text("ready\n")
    accepted: list[tuple[str, str]] = []
    deferred: list[int] = []
    refused: list[int] = []
    auth_failed: list[int] = []
    for i in range(args.count):
        started = time.monotonic()
        sender, recipient = senders[i % SENDERS], recipients[i % RECIPIENTS]
        message = lib.encrypted_message(sender.addr, [recipient.addr])
        try:
            with lib.smtp_connect(relay, 587) as client:
                try:
                    client.login(sender.addr, sender.password)
                except smtplib.SMTPAuthenticationError as error:
                    # Dovecot's dict passdb answers a failed lookup (doveauth unreachable) with
                    # a plain failure, which Postfix turns into 535: nothing was submitted
                    auth_failed.append(error.smtp_code)
                    print(f"{time.strftime('%H:%M:%S')} message {i}: AUTH {error.smtp_code} {error.smtp_error!r}",
                          file=sys.stderr, flush=True)
                    continue
                client.sendmail(sender.addr, [recipient.addr], message)
            accepted.append((lib.message_id(message), recipient.addr))
        except smtplib.SMTPResponseException as error:
            (deferred if 400 <= error.smtp_code < 500 else refused).append(error.smtp_code)
            print(f"{time.strftime('%H:%M:%S')} message {i}: {error.smtp_code} {error.smtp_error!r}",
                  file=sys.stderr, flush=True)
        except smtplib.SMTPRecipientsRefused as error:
            code = next(iter(error.recipients.values()))[0]
            (deferred if 400 <= code < 500 else refused).append(code)
            print(f"{time.strftime('%H:%M:%S')} message {i}: {error.recipients}", file=sys.stderr, flush=True)
        except (smtplib.SMTPException, OSError) as error:  # e.g. the connection closed early
            print(f"message {i}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            deferred.append(0)
        finally:
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    return {"accepted": accepted, "deferred": deferred, "refused": refused, "auth_failed": auth_failed,
            "recipients": [r.addr for r in recipients]}


def login_outcome(relay: lib.Relay, account: lib.Account) -> str:
    """"ok", "refused" (wrong password) or what else ended it (e.g. Dovecot's limit of 10
    connections per user and IP, which 100 concurrent logins of one user run into)."""
    try:
        lib.imap_login(relay, account).logout()
    except LoginError:
        return "refused"
    except Exception as error:  # noqa: BLE001 - reported, judged by the test
        return f"{type(error).__name__}: {error}"
    return "ok"


def logins(args: argparse.Namespace) -> dict:
    relay = lib.Relay(args.domain, args.ca)
    same = lib.random_account(args.domain)
    fresh = lib.random_account(args.domain)
    different = [lib.Account(fresh.addr, f"{fresh.password}-{i}") for i in range(args.concurrent)]
    with ThreadPoolExecutor(args.concurrent) as pool:
        same_outcomes = list(pool.map(lambda _: login_outcome(relay, same), range(args.concurrent)))
        different_outcomes = list(pool.map(lambda account: login_outcome(relay, account), different))
    return {"same": {"addr": same.addr, "password": same.password, "outcomes": same_outcomes},
            "different": {"addr": fresh.addr, "outcomes": different_outcomes,
                          "accepted_passwords": [a.password for a, o in zip(different, different_outcomes) if o == "ok"]}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["stream", "logins"])
    parser.add_argument("--domain", required=True)
    parser.add_argument("--recipient-domain")
    parser.add_argument("--ca")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--ready")
    parser.add_argument("--concurrent", type=int, default=100)
    args = parser.parse_args()
    result = stream(args) if args.command == "stream" else logins(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
