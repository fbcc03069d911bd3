#!/usr/bin/env python3
"""IMAP IDLE reports new mail: a session in IDLE on the recipient's INBOX gets EXISTS for every
message delivered to it, as a Delta Chat device waiting for messages does.

    python3 idle.py --domain DOMAIN [--to DOMAIN2] [--count N] [--faster-than MS] [--ca CAFILE] [--helo FQDN]

An account on DOMAIN submits N encrypted messages, one after the other over one submission
session, to an account on DOMAIN2 (default: DOMAIN, the same relay); each time, the time from the
end of the submission (the relay's 250) until the IDLE session reports EXISTS is printed.

--faster-than MS also checks that the fastest of them came sooner than MS. Dovecot 2.3 as shipped
reports a mailbox change no sooner than 500 ms after it (NOTIFY_DELAY_MSECS), and the change
follows the 250, so with 500 this tells a Dovecot built without that delay
(pkgs/dovecot/no-notify-delay.patch) from the stock one: the stock one can never pass, the patched
one fails only if every one of the N deliveries took half a second.

Exit 0 when every check holds, 1 with the failed check's message otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time

import scenario_lib as lib


def exists_after(idler, started: float) -> float:
    """Milliseconds from STARTED until the IDLE session IDLER reports EXISTS (bounded)."""
    deadline = started + lib.DELIVERY_TIMEOUT
    while time.monotonic() < deadline:
        responses = idler.idle_check(timeout=max(0.0, deadline - time.monotonic()))
        if any(b"EXISTS" in response for response in responses):
            return (time.monotonic() - started) * 1000
    raise lib.ScenarioFailure(f"no EXISTS in the IDLE session within {lib.DELIVERY_TIMEOUT:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", required=True, help="the sender's relay")
    parser.add_argument("--to", help="the recipient's relay (default: --domain)")
    parser.add_argument("--count", type=int, default=5, help="messages to send (default 5)")
    parser.add_argument("--faster-than", type=float, metavar="MS",
                        help="check that the fastest EXISTS came sooner than MS after the 250")
    lib.relay_arguments(parser)
    args = parser.parse_args()
    source = lib.Relay(args.domain, args.ca, args.helo)
    target = lib.Relay(args.to or args.domain, args.ca, args.helo)

    def steps() -> None:
        sender, recipient = lib.create_account(source), lib.create_account(target)
        lib.step(f"{sender.addr} sends to {recipient.addr}, whose INBOX is in IDLE")
        idler = lib.imap_login(target, recipient)
        idler.select_folder("INBOX")
        smtp = lib.smtp_connect(source, 587)
        smtp.login(sender.addr, sender.password)
        times = []
        try:
            for _ in range(args.count):
                idler.idle()
                smtp.sendmail(sender.addr, [recipient.addr], lib.encrypted_message(sender.addr, [recipient.addr]))
                times.append(exists_after(idler, time.monotonic()))
                idler.idle_done()
        finally:
            smtp.quit()
            idler.logout()
        lib.step("250 → EXISTS (ms): " + ", ".join(f"{ms:.0f}" for ms in times))
        if args.faster_than is not None:
            lib.check(min(times) < args.faster_than,
                      f"the fastest IDLE notification came {min(times):.0f} ms after the message was "
                      f"accepted, not sooner than {args.faster_than:.0f} ms (the stock Dovecot's delay "
                      "is 500 ms: is its notify delay patched out?)")
            lib.step(f"the fastest came sooner than {args.faster_than:.0f} ms")

    return lib.run_scenario(f"idle {args.domain} -> {args.to or args.domain}", steps)


if __name__ == "__main__":
    sys.exit(main())
