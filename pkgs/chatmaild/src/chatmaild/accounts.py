"""Chatmail addresses and where their mailboxes live.

An account ``<addr>`` is the directory ``<mailboxes_dir>/<addr>``; its ``password`` file holds the
Dovecot password hash, and the file's mtime is the day of the last login (upstream's layout).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .config import Config

# Dovecot lower-cases user names (auth_username_format = %Lu) and Postfix matches addresses
# case-insensitively, so an upper-case account could never receive mail: only lower case is valid.
# The first character is alphanumeric so a localpart can never look like "." / ".." or an option.
_LOCALPART_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
# libxcrypt's crypt() refuses longer passphrases (CRYPT_MAX_PASSPHRASE_SIZE)
MAX_PASSWORD_BYTES = 512


class InvalidAddress(ValueError):
    """An address that cannot be an account of this relay; the message says why."""


def check_address(addr: str, mail_domain: str) -> str:
    """Return the localpart of ``addr`` if it is a well-formed address of ``mail_domain``.

    Well-formed means: exactly one "@", the domain equals mail_domain, and the localpart uses only
    lower-case letters, digits, ".", "_" and "-", starts with a letter or digit, has no ".." and
    does not end with ".". Such a localpart is always a single, harmless path component.
    """
    localpart, at, domain = addr.rpartition("@")
    if not at or "@" in localpart:
        raise InvalidAddress(f"{addr!r} is not of the form localpart@domain")
    if domain != mail_domain:
        raise InvalidAddress(f"{addr!r} is not an address of {mail_domain}")
    if not _LOCALPART_RE.fullmatch(localpart) or ".." in localpart or localpart.endswith("."):
        raise InvalidAddress(f"{addr!r} has a localpart with characters or dots that are not allowed")
    return localpart


def creation_refusal(config: Config, addr: str, password: str, nocreate: bool) -> str | None:
    """Why a new account ``addr`` with ``password`` must not be created, or None if it may be.

    ``nocreate`` tells whether the nocreate file exists (the caller looks, this stays pure).
    """
    if nocreate:
        return "account creation is switched off (nocreate file exists)"
    try:
        localpart = check_address(addr, config.mail_domain)
    except InvalidAddress as e:
        return str(e)
    if not config.username_min_length <= len(localpart) <= config.username_max_length:
        return (
            f"localpart of {addr!r} must be {config.username_min_length}.."
            f"{config.username_max_length} characters long"
        )
    if len(password) < config.password_min_length:
        return f"password must be at least {config.password_min_length} characters long"
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES or "\x00" in password:
        return f"password longer than {MAX_PASSWORD_BYTES} bytes or with a NUL (crypt cannot hash it)"
    return None


@dataclass(frozen=True)
class Mailbox:
    """The files of one account (paths only; nothing is read until a method is called)."""

    addr: str
    maildir: Path

    @property
    def password_path(self) -> Path:
        return self.maildir / "password"

    @property
    def enforce_e2ee_path(self) -> Path:
        # created with the account (as upstream): incoming cleartext mail is refused while it exists
        return self.maildir / "enforceE2EEincoming"

    def is_incoming_cleartext_ok(self) -> bool:
        return not self.enforce_e2ee_path.exists()


def get_mailbox(config: Config, addr: str) -> Mailbox:
    """The mailbox of ``addr``; raises InvalidAddress for anything that is not a valid address."""
    check_address(addr, config.mail_domain)
    return Mailbox(addr=addr, maildir=config.mailboxes_dir / addr)


def day_timestamp(timestamp: float) -> int:
    """``timestamp`` rounded down to the start of its UTC day (last-login granularity)."""
    return int(timestamp) // 86400 * 86400
