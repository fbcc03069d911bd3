"""Reading and checking ``chatmail.ini`` (section ``[params]``).

Keys and defaults follow upstream chatmail relay's ``chatmail.ini`` template; every attribute of
:class:`Config` is named exactly like its ini key.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_NOCREATE_PATH = Path("/etc/chatmail-nocreate")
NOCREATE_PATH_ENV = "CHATMAIL_NOCREATE_PATH"


def nocreate_path() -> Path:
    """While this file exists, doveauth creates no new accounts."""
    return Path(os.environ.get(NOCREATE_PATH_ENV) or DEFAULT_NOCREATE_PATH)


class ConfigError(ValueError):
    """chatmail.ini is missing, unreadable or holds a value of the wrong kind."""


def _key_error(key: str, value: str, expected: str) -> ConfigError:
    return ConfigError(f"chatmail.ini: {key} = {value!r} is invalid: expected {expected}")


# --- value parsers: each takes (key, raw text) and returns the typed value or raises ConfigError


def _text(key: str, raw: str) -> str:
    return raw


def _optional_text(key: str, raw: str) -> str | None:
    return raw or None


def _bool(key: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0", ""):
        return False
    raise _key_error(key, raw, "true or false")


def _int_at_least(minimum: int) -> Callable[[str, str], int]:
    def parse(key: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise _key_error(key, raw, f"an integer >= {minimum}") from None
        if value < minimum:
            raise _key_error(key, raw, f"an integer >= {minimum}")
        return value

    return parse


def _port(key: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise _key_error(key, raw, "a TCP port number 1..65535")
    return value


_SIZE_RE = re.compile(r"([0-9]+)(?:([KMGT])B?)?", re.IGNORECASE)
_SIZE_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def size_bytes(size: str) -> int:
    """Bytes of a size like ``500M``: K/M/G/T are powers of 1024, an optional ``B`` may follow, and
    a bare number means megabytes (upstream 1.12's reading of max_mailbox_size and the
    system limits); raises ValueError for anything else."""
    match = _SIZE_RE.fullmatch(size.strip())
    if not match:
        raise ValueError(f"{size!r} is not a size like 500M")
    number, unit = match.groups()
    return int(number) * _SIZE_UNITS[(unit or "M").upper()]


def _size(key: str, raw: str) -> str:
    # kept as written (the ini and Dovecot's settings show it); size_bytes() reads it
    if not _SIZE_RE.fullmatch(raw):
        raise _key_error(key, raw, "a size like 500M (digits, optional K/M/G/T suffix)")
    return raw


def _positive_number(key: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise _key_error(key, raw, "a number greater than 0, like 5 or 2.5")
    return value


# a DNS name; a leading "_" is allowed because test relays use names like "_r1.test"
_DOMAIN_RE = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*")


def _domain(key: str, raw: str) -> str:
    if not _DOMAIN_RE.fullmatch(raw):
        raise _key_error(key, raw, "a lower-case domain name like chat.example.org")
    return raw


def _path(key: str, raw: str) -> Path:
    if not raw.startswith("/"):
        raise _key_error(key, raw, "an absolute path")
    return Path(raw)


# key -> (parser, default as ini text). Defaults are upstream's; None means "no default".
_PARAMS: dict[str, tuple[Callable[[str, str], Any], str | None]] = {
    "mail_domain": (_domain, None),
    "max_user_send_per_minute": (_int_at_least(1), "60"),
    "max_user_send_burst_size": (_int_at_least(1), "10"),
    "max_mailbox_size": (_size, "500M"),
    "max_message_size": (_int_at_least(1), "31457280"),
    "delete_mails_after": (_int_at_least(1), "20"),
    "delete_large_after": (_int_at_least(1), "7"),
    "delete_inactive_users_after": (_int_at_least(1), "90"),
    "username_min_length": (_int_at_least(1), "9"),
    "username_max_length": (_int_at_least(1), "9"),
    "password_min_length": (_int_at_least(1), "9"),
    "www_folder": (_text, ""),
    "filtermail_smtp_port": (_port, "10080"),
    "postfix_reinject_port": (_port, "10025"),
    "filtermail_smtp_port_incoming": (_port, "10081"),
    "postfix_reinject_port_incoming": (_port, "10026"),
    # relay-to-relay delivery over HTTPS (chatmail-mxdeliv): upstream's key for the loopback port
    # behind nginx's /mxdeliv route, and this relay's own two (its Postfix side)
    "filtermail_http_port_incoming": (_port, "10082"),
    "postfix_mxdeliv_port": (_port, "10027"),
    "mxdeliv_fallback_port": (_port, "10084"),
    "disable_ipv6": (_bool, "false"),
    "acme_email": (_text, ""),
    "iroh_relay": (_text, None),  # default depends on mail_domain, see read_config
    "mtail_address": (_optional_text, ""),
    "turn_socket_path": (_path, "/run/chatmail-turn/turn.socket"),
    "imap_rawlog": (_bool, "false"),
    "imap_compress": (_bool, "false"),
    "privacy_postal": (_text, ""),
    "privacy_mail": (_text, ""),
    "privacy_pdo": (_text, ""),
    "privacy_supervisor": (_text, ""),
    # system limits (upstream 1.12): doveauth creates no account above the load or below the
    # memory or disk space; the connection limits are rendered into Dovecot's and Postfix's config
    "max_load_1m": (_positive_number, "5"),
    "min_available_memory": (_size, "200M"),
    "min_free_disk_space": (_size, "1G"),
    "max_imap_connections": (_int_at_least(1), "10000"),
    "max_smtp_connections": (_int_at_least(5), "1000"),
    "mailboxes_dir": (_path, None),  # default depends on mail_domain, see read_config
}

# upstream keys that no part of this relay reads; accepted without a warning
_OBSOLETE_KEYS = frozenset({"passdb_path"})
# keys upstream removed; still read (so an old chatmail.ini works), with this warning
_REMOVED_KEYS = {
    key: f"chatmail.ini: {key} is no longer supported and is ignored (removed in upstream 1.11: "
    "unencrypted mail never passes)"
    for key in ("passthrough_senders", "passthrough_recipients")
}


@dataclass(frozen=True)
class Config:
    """The checked contents of chatmail.ini; attributes are named like the ini keys."""

    mail_domain: str
    mailboxes_dir: Path
    iroh_relay: str
    # True when iroh_relay is not set: this relay runs its own iroh-relay (upstream semantics)
    enable_iroh_relay: bool
    max_user_send_per_minute: int = 60
    max_user_send_burst_size: int = 10
    max_mailbox_size: str = "500M"
    max_message_size: int = 31457280
    delete_mails_after: int = 20
    delete_large_after: int = 7
    delete_inactive_users_after: int = 90
    username_min_length: int = 9
    username_max_length: int = 9
    password_min_length: int = 9
    www_folder: str = ""
    filtermail_smtp_port: int = 10080
    postfix_reinject_port: int = 10025
    filtermail_smtp_port_incoming: int = 10081
    postfix_reinject_port_incoming: int = 10026
    filtermail_http_port_incoming: int = 10082
    postfix_mxdeliv_port: int = 10027
    mxdeliv_fallback_port: int = 10084
    disable_ipv6: bool = False
    acme_email: str = ""
    mtail_address: str | None = None
    # where chatmail-metadata gets TURN credentials (chatmail-turn-credentials, upstream's
    # chatmail-turn)
    turn_socket_path: Path = Path("/run/chatmail-turn/turn.socket")
    imap_rawlog: bool = False
    imap_compress: bool = False
    privacy_postal: str = ""
    privacy_mail: str = ""
    privacy_pdo: str = ""
    privacy_supervisor: str = ""
    max_load_1m: float = 5.0
    min_available_memory: str = "200M"
    min_free_disk_space: str = "1G"
    max_imap_connections: int = 10000
    max_smtp_connections: int = 1000
    inipath: Path | None = None

    @property
    def max_mailbox_size_bytes(self) -> int:
        return size_bytes(self.max_mailbox_size)


def parse_params(params: Mapping[str, str], inipath: Path | None = None) -> Config:
    """Check the raw ``[params]`` values and build a Config; raises ConfigError."""
    for key in sorted(set(params) - set(_PARAMS) - _OBSOLETE_KEYS):
        log.warning(_REMOVED_KEYS.get(key, f"chatmail.ini: ignoring unknown key {key!r}"))

    raw_domain = params.get("mail_domain", "").strip()
    if not raw_domain:
        raise ConfigError("chatmail.ini: mail_domain is missing: expected a domain name")

    values: dict[str, Any] = {}
    for key, (parse, default) in _PARAMS.items():
        raw = params.get(key)
        if raw is None:
            if default is None:
                continue
            raw = default
        values[key] = parse(key, raw.strip())

    values["enable_iroh_relay"] = "iroh_relay" not in params
    values.setdefault("iroh_relay", f"https://{values['mail_domain']}")
    values.setdefault("mailboxes_dir", Path(f"/home/vmail/mail/{values['mail_domain']}"))

    if values["username_min_length"] > values["username_max_length"]:
        raise ConfigError(
            f"chatmail.ini: username_min_length = {values['username_min_length']} is invalid: "
            f"expected at most username_max_length = {values['username_max_length']}"
        )
    return Config(inipath=inipath, **values)


def read_config(path: str | os.PathLike[str]) -> Config:
    """Read and check chatmail.ini; raises ConfigError naming the offending key and value."""
    inipath = Path(path)
    parser = configparser.ConfigParser(
        interpolation=None,
        comment_prefixes=("#",),
        inline_comment_prefixes=None,
        strict=True,
        empty_lines_in_values=False,
    )
    try:
        with inipath.open(encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ConfigError(f"chatmail.ini: cannot read {inipath}: {e.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as e:
        raise ConfigError(f"chatmail.ini: {inipath} is not a valid ini file: {e}") from None
    if not parser.has_section("params"):
        raise ConfigError(f"chatmail.ini: {inipath} has no [params] section")
    return parse_params(dict(parser.items("params")), inipath=inipath)
