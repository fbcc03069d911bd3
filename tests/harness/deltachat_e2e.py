#!/usr/bin/env python3
"""Delta Chat core against two local relays: run inside the harness's client namespace.

    local-relay exec -- VENV/bin/python tests/harness/deltachat_e2e.py --domains D1,D2 --ca CA
        [--certificate-checks automatic|strict|acceptInvalidCertificates] [--helo FQDN]

Two accounts (one per relay) are configured with address + password, set up a verified contact
through a Secure-Join QR code and exchange encrypted messages both ways; then a plain SMTP client's
cleartext mail to one of them is refused with 523, on submission and on port 25.
Core verifies TLS only against its built-in roots (it ignores SSL_CERT_FILE and the system store),
so against the harness CA the accounts use core's `acceptInvalidCertificates` certificate checks
(the default here); a relay with a public certificate can be checked with `automatic`.
"""

from __future__ import annotations

import argparse
import secrets
import smtplib
import sys
import tempfile
import threading
import time
from pathlib import Path

from deltachat_rpc_client import Account, DeltaChat, Rpc

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "nixos-tests" / "scenarios"))
import scenario_lib as lib  # noqa: E402

STEP_TIMEOUT = 30.0


def bounded(what: str, wait, timeout: float = STEP_TIMEOUT):
    """Run the blocking WAIT() in a thread; fail if it takes longer than TIMEOUT seconds."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = wait()
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise lib.ScenarioFailure(f"{what}: no result within {timeout:.0f}s (see the relay logs)")
    if "error" in outcome:
        raise outcome["error"]
    lib.step(f"{what} ({time.monotonic() - started:.2f}s)")
    return outcome.get("value")


def configured_account(dc: DeltaChat, domain: str, certificate_checks: str
                       ) -> tuple[Account, lib.Account]:
    credentials = lib.random_account(domain)
    account = dc.add_account()
    account.set_config("displayname", credentials.addr.split("@")[0])
    bounded(f"configured {credentials.addr}", lambda: account.add_or_update_transport({
        "addr": credentials.addr,
        "password": credentials.password,
        "certificateChecks": certificate_checks,
    }))
    account.bring_online()
    return account, credentials


def qr_fingerprint(qr: str) -> str:
    """The inviter's key fingerprint from a Secure-Join QR code: `OPENPGP4FPR:<fpr>#...` or an
    invite link `https://<host>/#<fpr>&...`."""
    if qr.upper().startswith("OPENPGP4FPR:"):
        fingerprint = qr.partition(":")[2].split("#")[0]
    else:
        fingerprint = qr.partition("#")[2].split("&")[0]
    lib.check(len(fingerprint) == 40 and all(c in "0123456789abcdefABCDEF" for c in fingerprint),
              f"no key fingerprint in the Secure-Join QR code {qr[:60]!r}")
    return fingerprint.upper()


def check_verified(account: Account, peer_addr: str, expected_fingerprint: str | None) -> None:
    """After Secure-Join the peer is a key contact in an encrypted, accepted 1:1 chat (core 2.x
    has no separate "verified" flag in its API); the joiner holds exactly the QR's key."""
    contact = account.get_contact_by_addr(peer_addr)
    lib.check(contact is not None, f"no contact {peer_addr} after Secure-Join")
    snapshot = contact.get_snapshot()
    lib.check(snapshot.is_key_contact and snapshot.e2ee_avail,
              f"{peer_addr} is not a key contact with encryption after Secure-Join: {snapshot}")
    chat = account.get_chat_by_contact(contact)
    lib.check(chat is not None, f"no chat with {peer_addr} after Secure-Join")
    chat_snapshot = chat.get_basic_snapshot()
    lib.check(chat_snapshot.is_encrypted and not chat_snapshot.is_contact_request,
              f"chat with {peer_addr} is not an accepted encrypted chat: {chat_snapshot}")
    if expected_fingerprint:
        info = "".join(contact.get_encryption_info().split()).upper()
        lib.check(expected_fingerprint in info,
                  f"{peer_addr}'s key is not the one in the QR code ({expected_fingerprint})")


def wait_for_text(account: Account, text: str):
    while True:
        message = account.wait_for_incoming_msg()
        snapshot = message.get_snapshot()
        if snapshot.text == text:
            return snapshot


def exchange(sender: Account, receiver: Account, receiver_addr: str) -> None:
    text = f"hello {secrets.token_hex(4)}"
    chat = sender.create_chat(receiver)
    chat.send_text(text)
    snapshot = bounded(f"{receiver_addr} received {text!r}", lambda: wait_for_text(receiver, text))
    lib.check(snapshot.show_padlock, f"message to {receiver_addr} arrived without end-to-end "
                                     "encryption (no padlock)")


def cleartext_refused(target: lib.Account, other_domain: str, ca: str | None, helo: str | None
                      ) -> None:
    """A plain SMTP client cannot get cleartext to a Delta Chat user: 523 on submission (its own
    relay's outgoing filter) and on port 25 (the user's relay's incoming filter)."""
    relay = lib.Relay(other_domain, ca, helo)
    sender = lib.create_account(relay)
    plain = lib.plain_message(sender.addr, [target.addr])
    try:
        lib.submit(relay, sender, [target.addr], plain)
        raise lib.ScenarioFailure(f"cleartext to {target.addr} accepted on submission")
    except smtplib.SMTPDataError as error:
        lib.check(error.smtp_code == 523, f"submission refused with {error.smtp_code}, not 523")
    lib.step(f"cleartext from {sender.addr} to {target.addr} refused on submission (523)")
    target_relay = lib.Relay(target.addr.split("@")[1], ca, helo)
    with lib.smtp_connect(target_relay, 25) as client:
        try:
            client.sendmail(sender.addr, [target.addr], plain)
            raise lib.ScenarioFailure(f"cleartext to {target.addr} accepted on port 25")
        except smtplib.SMTPDataError as error:
            lib.check(error.smtp_code == 523, f"port 25 refused with {error.smtp_code}, not 523")
    lib.step(f"cleartext to {target.addr} over port 25 refused (523)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", required=True, help="two relay domains, comma-separated")
    lib.relay_arguments(parser)  # --ca, --helo: for the plain SMTP client
    parser.add_argument("--certificate-checks", default="acceptInvalidCertificates",
                        choices=("automatic", "strict", "acceptInvalidCertificates"),
                        help="core's TLS checks (default acceptInvalidCertificates: the harness CA)")
    parser.add_argument("--rpc-server", default=str(Path(sys.executable).parent / "deltachat-rpc-server"))
    args = parser.parse_args()
    first_domain, second_domain = args.domains.split(",")

    def steps() -> None:
        with tempfile.TemporaryDirectory() as accounts_dir, \
                Rpc(accounts_dir=accounts_dir, rpc_server_path=args.rpc_server) as rpc:
            dc = DeltaChat(rpc)
            alice, alice_credentials = configured_account(dc, first_domain, args.certificate_checks)
            bob, bob_credentials = configured_account(dc, second_domain, args.certificate_checks)
            qr = alice.get_qr_code()
            bob.secure_join(qr)
            bounded("Secure-Join: inviter done", alice.wait_for_securejoin_inviter_success)
            bounded("Secure-Join: joiner done", bob.wait_for_securejoin_joiner_success)
            check_verified(bob, alice_credentials.addr, qr_fingerprint(qr))
            check_verified(alice, bob_credentials.addr, None)
            lib.step("both sides have an encrypted chat with the other's key; "
                     "the joiner holds the key the QR code named")
            exchange(alice, bob, bob_credentials.addr)
            exchange(bob, alice, alice_credentials.addr)
            cleartext_refused(alice_credentials, second_domain, args.ca, args.helo)

    return lib.run_scenario(f"deltachat {first_domain} <-> {second_domain}", steps)


if __name__ == "__main__":
    sys.exit(main())
