"""Client-side building blocks of the scenarios: accounts, IMAP and SMTP with bounded waits.

Plain stdlib + imapclient; messages come from chatmaild.testmail. Every network call has a timeout.
"""

from __future__ import annotations

import argparse
import secrets
import smtplib
import socket
import ssl
import string
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from chatmaild import testmail
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

NETWORK_TIMEOUT = 15.0
DELIVERY_TIMEOUT = 30.0
LOCALPART_LENGTH = 9  # chatmail.ini username_min_length = username_max_length = 9 by default


class ScenarioFailure(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ScenarioFailure(message)


def step(message: str) -> None:
    print(f"  - {message}", flush=True)


@dataclass(frozen=True)
class Relay:
    """How to reach a relay: its mail domain (also the host name) and whom to trust for TLS."""

    domain: str
    ca: str | None = None
    helo: str | None = None

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca)


@dataclass(frozen=True)
class Account:
    addr: str
    password: str


def random_account(domain: str) -> Account:
    """A fresh address (never used before: random localpart) with a random password."""
    alphabet = string.ascii_lowercase + string.digits
    localpart = secrets.choice(string.ascii_lowercase) + "".join(
        secrets.choice(alphabet) for _ in range(LOCALPART_LENGTH - 1))
    return Account(f"{localpart}@{domain}", secrets.token_urlsafe(18))


def imap_connect(relay: Relay, port: int) -> IMAPClient:
    """993: implicit TLS; 143: STARTTLS (the relay refuses login without TLS)."""
    if port == 143:
        client = IMAPClient(relay.domain, port=143, ssl=False, timeout=NETWORK_TIMEOUT)
        client.starttls(relay.tls())
        return client
    return IMAPClient(relay.domain, port=port, ssl=True, ssl_context=relay.tls(),
                      timeout=NETWORK_TIMEOUT)


def imap_login(relay: Relay, account: Account, port: int = 993) -> IMAPClient:
    client = imap_connect(relay, port)
    client.login(account.addr, account.password)
    return client


def create_account(relay: Relay, port: int = 993) -> Account:
    """Accounts are created by their first IMAP login."""
    account = random_account(relay.domain)
    imap_login(relay, account, port).logout()
    return account


def login_refused(relay: Relay, addr: str, password: str, port: int = 993) -> bool:
    client = imap_connect(relay, port)
    try:
        client.login(addr, password)
    except LoginError:
        return True
    finally:
        with_timeout_close(client)
    return False


def accepted_logins(relay: Relay, attempts: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Of (addr, password, port) ATTEMPTS, those the relay accepted. Run side by side: Dovecot
    delays every refusal by auth_failure_delay (2 s)."""
    with ThreadPoolExecutor(max_workers=max(1, len(attempts))) as pool:
        refused = list(pool.map(lambda attempt: login_refused(relay, *attempt), attempts))
    return [attempt for attempt, was_refused in zip(attempts, refused) if not was_refused]


def with_timeout_close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # the connection may be gone after a refused login; nothing to clean up
        client.shutdown()


def smtp_connect(relay: Relay, port: int) -> smtplib.SMTP:
    """587: STARTTLS; 465: implicit TLS; 25: relay-to-relay port, STARTTLS."""
    helo = relay.helo or socket.getfqdn()
    if port == 465:
        return smtplib.SMTP_SSL(relay.domain, 465, local_hostname=helo, context=relay.tls(),
                                timeout=NETWORK_TIMEOUT)
    client = smtplib.SMTP(relay.domain, port, local_hostname=helo, timeout=NETWORK_TIMEOUT)
    client.starttls(context=relay.tls())
    return client


# MAIL FROM parameters Delta Chat core sends.
DELTACHAT_MAIL_OPTIONS = ("BODY=8BITMIME", "SMTPUTF8")


def submit(relay: Relay, account: Account, recipients: list[str], message: bytes,
           port: int = 587, sender: str | None = None, mail_options: tuple[str, ...] = ()) -> None:
    """Authenticated submission; raises smtplib's errors as they come."""
    with smtp_connect(relay, port) as client:
        client.login(account.addr, account.password)
        client.sendmail(sender or account.addr, recipients, message, mail_options=list(mail_options))


def header(message: bytes, name: str) -> str | None:
    head = message.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    for line in head.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def body(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[1]


def fetch_by_message_id(client: IMAPClient, message_id: str) -> list[bytes]:
    client.select_folder("INBOX", readonly=True)
    uids = client.search(["HEADER", "Message-ID", message_id])
    return [data[b"RFC822"] for data in client.fetch(uids, ["RFC822"]).values()] if uids else []


def wait_for_message(relay: Relay, account: Account, message_id: str,
                     timeout: float = DELIVERY_TIMEOUT) -> bytes:
    """The delivered message with MESSAGE_ID in ACCOUNT's INBOX; fails after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    client = imap_login(relay, account)
    try:
        while True:
            found = fetch_by_message_id(client, message_id)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise ScenarioFailure(
                    f"{message_id} did not reach {account.addr} within {timeout:.0f}s")
            time.sleep(0.2)
    finally:
        client.logout()


def assert_delivered_intact(sent: bytes, delivered: bytes, what: str) -> None:
    """The relay may add trace headers, but the body must arrive byte for byte."""
    check(body(delivered) == body(sent),
          f"{what}: delivered body differs from the sent one "
          f"({len(body(delivered))} vs {len(body(sent))} bytes)")
    for name in ("From", "To", "Message-ID", "Content-Type"):
        check(header(delivered, name) == header(sent, name),
              f"{what}: header {name} changed: {header(sent, name)!r} -> {header(delivered, name)!r}")


def relay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ca", help="CA certificate file to trust (default: the system's)")
    parser.add_argument("--helo", help="EHLO name (default: this host's FQDN; must be an FQDN)")


def run_scenario(name: str, steps) -> int:
    """Run STEPS(), print a verdict; exit status 0 on success, 1 with the failed check's message."""
    started = time.monotonic()
    print(f"{name}:", flush=True)
    try:
        steps()
    except (ScenarioFailure, smtplib.SMTPException, OSError, LoginError) as error:
        print(f"{name}: FAILED after {time.monotonic() - started:.1f}s: "
              f"{type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 1
    print(f"{name}: OK in {time.monotonic() - started:.1f}s", flush=True)
    return 0


def encrypted_message(sender: str, recipients: list[str]) -> bytes:
    return testmail.to_bytes(testmail.make_encrypted_message(sender, recipients))


def plain_message(sender: str, recipients: list[str]) -> bytes:
    return testmail.to_bytes(testmail.make_plain_message(sender, recipients))


def message_id(message: bytes) -> str:
    found = header(message, "Message-ID")
    check(found is not None, "test message has no Message-ID")
    return found
