#!/usr/bin/env python3
"""One relay from a client's side: accounts, logins, submission, the encryption rule, delivery.

    python3 basic.py --domain DOMAIN [--ca CAFILE] [--helo FQDN]

Exit 0 when every check holds, 1 with the failed check's message otherwise.
"""

from __future__ import annotations

import argparse
import smtplib
import sys

import scenario_lib as lib


def accounts_and_logins(relay: lib.Relay) -> tuple[lib.Account, lib.Account]:
    alice = lib.create_account(relay, port=143)
    lib.step(f"first login on 143 (STARTTLS) created {alice.addr}")
    lib.imap_login(relay, alice, port=993).logout()
    lib.step("the same account logs in on 993 (TLS)")
    bob = lib.create_account(relay, port=993)
    lib.step(f"first login on 993 created {bob.addr}")
    accepted = lib.accepted_logins(relay, [(alice.addr, alice.password + "x", 993),
                                           (alice.addr, alice.password + "x", 143)])
    lib.check(not accepted, f"{alice.addr}: a wrong password was accepted: {accepted}")
    lib.step("a wrong password is refused on 993 and 143")
    return alice, bob


def invalid_addresses_refused(relay: lib.Relay) -> None:
    fresh = lib.random_account(relay.domain)
    localpart = fresh.addr.split("@")[0]
    invalid = {
        "localpart too short": f"{localpart[:4]}@{relay.domain}",
        "localpart too long": f"{localpart}abc@{relay.domain}",
        "characters not allowed": f"{localpart[:7]}$%@{relay.domain}",
        "another domain": f"{localpart}@other-{relay.domain}",
        "no domain": localpart,
    }
    attempts = [(addr, fresh.password, 993) for addr in invalid.values()]
    attempts.append((fresh.addr, "short", 993))  # a valid address, too short a password
    accepted = lib.accepted_logins(relay, attempts)
    lib.check(not accepted, f"logins that should have been refused were accepted: {accepted}")
    lib.step(f"invalid addresses refused at login: {', '.join(invalid)}, too short a password")


def submission(relay: lib.Relay, alice: lib.Account, bob: lib.Account) -> None:
    plain_options: tuple[str, ...] = ()
    for port, sender, recipient, options in ((587, alice, bob, plain_options),
                                              (465, bob, alice, lib.DELTACHAT_MAIL_OPTIONS)):
        sent = lib.encrypted_message(sender.addr, [recipient.addr])
        try:
            lib.submit(relay, sender, [recipient.addr], sent, port=port, mail_options=options)
        except smtplib.SMTPException as error:
            raise lib.ScenarioFailure(f"submission on {port} with MAIL FROM parameters "
                                      f"{' '.join(options) or '(none)'} failed: {error}") from None
        delivered = lib.wait_for_message(relay, recipient, lib.message_id(sent))
        lib.assert_delivered_intact(sent, delivered, f"port {port}")
        lib.step(f"OpenPGP/MIME message submitted on {port} ({' '.join(options) or 'plain MAIL FROM'}) "
                 f"delivered to {recipient.addr} ({len(delivered)} bytes, body identical)")


def plaintext_refused(relay: lib.Relay, alice: lib.Account, bob: lib.Account) -> None:
    plain = lib.plain_message(alice.addr, [bob.addr])
    try:
        lib.submit(relay, alice, [bob.addr], plain)
    except smtplib.SMTPDataError as error:
        lib.check(error.smtp_code == 523, f"plaintext refused with {error.smtp_code}, not 523: "
                                          f"{error.smtp_error!r}")
    else:
        raise lib.ScenarioFailure("an unencrypted message was accepted for submission")
    # A message sent after the refused one has arrived: the refused one would be there by now.
    marker = lib.encrypted_message(alice.addr, [bob.addr])
    lib.submit(relay, alice, [bob.addr], marker)
    lib.wait_for_message(relay, bob, lib.message_id(marker))
    client = lib.imap_login(relay, bob)
    try:
        lib.check(not lib.fetch_by_message_id(client, lib.message_id(plain)),
                  "the refused plaintext message was delivered anyway")
    finally:
        client.logout()
    lib.step("unencrypted message refused with 523, nothing delivered")


def sender_mismatch_refused(relay: lib.Relay, alice: lib.Account, bob: lib.Account) -> None:
    forged = lib.encrypted_message(bob.addr, [alice.addr])
    try:
        lib.submit(relay, alice, [alice.addr], forged, sender=bob.addr)
    except smtplib.SMTPSenderRefused as error:
        code = error.smtp_code
    except smtplib.SMTPRecipientsRefused as error:  # Postfix delays the sender check to RCPT
        code = next(iter(error.recipients.values()))[0]
    else:
        raise lib.ScenarioFailure(f"{alice.addr} could send as {bob.addr}")
    lib.check(code == 553, f"sender-login mismatch refused with {code}, expected 553")
    lib.step(f"{alice.addr} may not send as {bob.addr} (553)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", required=True, help="the relay's mail domain (also its host)")
    lib.relay_arguments(parser)
    args = parser.parse_args()
    relay = lib.Relay(args.domain, args.ca, args.helo)

    def steps() -> None:
        alice, bob = accounts_and_logins(relay)
        invalid_addresses_refused(relay)
        submission(relay, alice, bob)
        plaintext_refused(relay, alice, bob)
        sender_mismatch_refused(relay, alice, bob)

    return lib.run_scenario(f"basic {args.domain}", steps)


if __name__ == "__main__":
    sys.exit(main())
