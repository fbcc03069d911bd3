#!/usr/bin/env python3
"""Client side of the concurrent DKIM test: run inside the harness's client namespace.

    local-relay exec -- VENV/bin/python tests/harness/dkim_load_client.py SENDER RECIPIENT \
        --threads 8 --senders 16 --each 10 --ca CA

SENDERS accounts on relay SENDER, THREADS at a time, each submit EACH encrypted mails (within the
relay's send burst) to one account on relay RECIPIENT, so SENDER's OpenDKIM signs and RECIPIENT's
verifies many mails at once. Prints one JSON object on its last line: how many were submitted, how
many reached the recipient's INBOX within the deadline, and the submission errors
(tests/harness/test_dkim_load.py judges them).
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

DELIVERY_DEADLINE = 40.0


def submit_share(sending: lib.Relay, recipient: str, count: int) -> tuple[list[str], list[str]]:
    """One account submits COUNT mails over one connection each: (message ids, errors)."""
    sender = lib.create_account(sending)
    sent, errors = [], []
    for _ in range(count):
        message = lib.encrypted_message(sender.addr, [recipient])
        try:
            lib.submit(sending, sender, [recipient], message)
            sent.append(lib.message_id(message))
        except (OSError, smtplib.SMTPException) as error:
            errors.append(f"{type(error).__name__}: {error}")
    return sent, errors


def delivered_ids(receiving: lib.Relay, account: lib.Account, wanted: set[str],
                  deadline: float) -> set[str]:
    """The WANTED message ids found in ACCOUNT's INBOX once all arrived or DEADLINE passed."""
    client = lib.imap_login(receiving, account)
    try:
        while True:
            client.select_folder("INBOX", readonly=True)
            uids = client.search(["ALL"])
            found = {lib.header(data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"], "Message-ID")
                     for data in client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]).values()
                     } if uids else set()
            if wanted <= found or time.monotonic() > deadline:
                return wanted & found
            time.sleep(0.5)
    finally:
        client.logout()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    lib.relay_arguments(parser)
    parser.add_argument("sender_domain")
    parser.add_argument("recipient_domain")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--each", type=int, default=10, help="mails per sender")
    args = parser.parse_args()
    sending = lib.Relay(args.sender_domain, args.ca, args.helo)
    receiving = lib.Relay(args.recipient_domain, args.ca, args.helo)
    recipient = lib.create_account(receiving)
    started = time.monotonic()
    with ThreadPoolExecutor(args.threads) as pool:
        results = list(pool.map(lambda _: submit_share(sending, recipient.addr, args.each),
                                range(args.senders)))
    sent = {message_id for ids, _ in results for message_id in ids}
    errors = [error for _, share_errors in results for error in share_errors]
    arrived = delivered_ids(receiving, recipient, sent, time.monotonic() + DELIVERY_DEADLINE)
    print(json.dumps({"submitted": len(sent), "delivered": len(arrived), "errors": errors,
                      "seconds": round(time.monotonic() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
