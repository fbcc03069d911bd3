"""chatmail-metadata: Dovecot's IMAP METADATA store for push device tokens (dict protocol server).

Dovecot (``mail_attribute_dict = proxy:SOCKET:metadata``) turns mailbox attributes into dict keys
``priv/<mailbox guid>/<name>`` and ``shared/<mailbox guid>/<name>``, with the user in the ``B`` and
``L`` requests. Handled:

- ``priv/*/devicetoken`` set: ``SETMETADATA INBOX (/private/devicetoken TOKEN)`` by a Delta Chat
  client adds TOKEN to the mailbox's tokens (tokens unused for 90 days expire); lookup answers all
  tokens, space-separated. Unset is accepted and ignored: which token would it remove?
- ``priv/*/messagenew`` set: the LMTP push-notification Lua script sets it when a message
  arrives; every token of the mailbox gets a notification (see notifier.py).
- server metadata, ``GETMETADATA "" /shared/vendor/deltachat/<name>``, which Dovecot looks up as
  ``shared/*/vendor/vendor.dovecot/pvt/server/vendor/deltachat/<name>`` (upstream 1.12's answers):
  ``irohrelay``: the ``iroh_relay`` URL (not found when it is empty); ``turn``: fresh TURN
  credentials, ``<mail_domain>:3478:<username>:<password>``, from the unix socket
  ``turn_socket_path`` (chatmail-turn-credentials, turn.py), not found when nothing answers there;
  ``maxsmtprecipients``: 1000, the most recipients Postfix takes in one SMTP transaction (Delta
  Chat core sends to more as several transactions); ``appversions``: the app version index
  (``--appversions FILE``, by default the ``appversions.json`` shipped with chatmaild) as one line
  of compact JSON, for apps installed outside app stores; not found when the file is missing or
  not JSON.

Anything else: lookups answer not-found, iterations are empty, a transaction that sets another key
fails at commit. Changes take effect at commit, in order; rollback discards them.

Tokens are stored per mailbox in ``<mailboxes_dir>/<addr>/metadata.json`` (upstream's format:
``{"devicetoken": {token: last-set timestamp}}``), pending notifications in
``<mailboxes_dir>/pending_notifications/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from . import dictproto, dictserver
from .accounts import InvalidAddress, get_mailbox
from .cliargs import positive_float, positive_int
from .config import Config, ConfigError, read_config
from .filestore import read_json_object, write_json_object
from .turn import fetch_credentials, metadata_value
from .notifier import (
    DEFAULT_NOTIFY_URL,
    DEFAULT_WORKERS,
    QUEUE_DIR_NAME,
    RETRY_BASE_DELAY,
    Notifier,
)

log = logging.getLogger(__name__)

DEVICETOKEN_KEY = "devicetoken"
MESSAGENEW_KEY = "messagenew"
SERVER_KEY_PREFIX = "vendor/vendor.dovecot/pvt/server/vendor/deltachat/"
IROH_RELAY_KEY = SERVER_KEY_PREFIX + "irohrelay"
TURN_KEY = SERVER_KEY_PREFIX + "turn"
MAX_SMTP_RECIPIENTS_KEY = SERVER_KEY_PREFIX + "maxsmtprecipients"
APPVERSIONS_KEY = SERVER_KEY_PREFIX + "appversions"
# Postfix's smtpd_recipient_limit, whose default render.nix keeps (a test holds them together)
MAX_SMTP_RECIPIENTS = 1000
DEFAULT_APPVERSIONS = Path(str(files(__package__).joinpath("appversions.json")))
APPVERSION_SOURCE_KEYS = ("sourceId", "versionInteger", "versionString", "downloadUrl")
METADATA_FILE_NAME = "metadata.json"
TOKEN_MAX_AGE = 90 * 86400  # seconds a token lives after its client last set it
TOKEN_MAX_FUTURE = 60  # timestamps further ahead are bogus (clock jumped back)
# a mailbox keeps its most recently set tokens only: every token costs a request per message
MAX_TOKENS_PER_MAILBOX = 32


# --- rules (pure)


def live_tokens(stored: Any, now: float) -> dict[str, int]:
    """The tokens of a stored ``devicetoken`` value that have not expired, with their timestamps.

    Very old upstream versions stored a plain list of tokens: those count as set ``now``.
    """
    if isinstance(stored, list):
        stored = {token: int(now) for token in stored if isinstance(token, str)}
    if not isinstance(stored, dict):
        return {}
    return {
        token: ts
        for token, ts in stored.items()
        if isinstance(ts, int) and now - TOKEN_MAX_AGE < ts < now + TOKEN_MAX_FUTURE
    }


def with_token(tokens: dict[str, int], token: str, now: float) -> dict[str, int]:
    """``tokens`` with ``token`` set at ``now``, keeping the MAX_TOKENS_PER_MAILBOX newest."""
    updated = {t: ts for t, ts in tokens.items() if t != token}
    updated[token] = int(now)
    newest = sorted(updated.items(), key=lambda item: item[1])[-MAX_TOKENS_PER_MAILBOX:]
    return dict(newest)


def appversions_problems(data: Any) -> list[str]:
    """Why Delta Chat core would not use this app version index (empty: it would).

    Core reads it into typed structures and drops the whole index when one value has another
    type; a misspelled key silently becomes a default, so unknown keys count as problems too.
    """
    if not isinstance(data, dict) or set(data) != {"clients"}:
        return ['expected an object with the one key "clients"']
    if not isinstance(data["clients"], list):
        return ['"clients" is not a list']
    problems = []
    for i, client in enumerate(data["clients"]):
        where = f"clients[{i}]"
        if not isinstance(client, dict) or set(client) != {"clientId", "sources"}:
            problems.append(f'{where}: expected the keys "clientId" and "sources"')
            continue
        if not isinstance(client["clientId"], str) or not client["clientId"]:
            problems.append(f"{where}.clientId: expected a non-empty string")
        if not isinstance(client["sources"], list):
            problems.append(f"{where}.sources: expected a list")
            continue
        for j, source in enumerate(client["sources"]):
            at = f"{where}.sources[{j}]"
            if not isinstance(source, dict) or set(source) != set(APPVERSION_SOURCE_KEYS):
                problems.append(f"{at}: expected the keys {', '.join(APPVERSION_SOURCE_KEYS)}")
                continue
            for key in ("sourceId", "versionString", "downloadUrl"):
                if not isinstance(source[key], str) or not source[key]:
                    problems.append(f"{at}.{key}: expected a non-empty string")
            number = source["versionInteger"]
            # core parses it as an unsigned 32-bit integer
            if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < 2**32:
                problems.append(f"{at}.versionInteger: expected an integer from 0 to 2^32-1")
    return problems


def read_appversions(path: Path) -> str | None:
    """The app version index at ``path`` as one line of compact JSON (a dict value is one
    protocol line); None when the file is missing or not JSON."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.error("cannot serve app versions from %s: %s", path, e)
        return None
    return json.dumps(data, separators=(",", ":"))


def attribute_name(key: str) -> tuple[str, str]:
    """Split a dict key ``<priv|shared>/<mailbox guid>/<name>`` into (scope, name)."""
    scope, guid, name = (key.split("/", 2) + ["", ""])[:3]
    if scope not in ("priv", "shared") or not guid or not name:
        raise dictproto.ProtocolError(f"not a mailbox attribute key: {key!r}")
    return scope, name


# --- token storage


class TokenStore:
    """Device tokens per mailbox, one JSON file in each maildir (written atomically, durably)."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock

    def _path(self, addr: str) -> Path:
        """The token file of ``addr``; raises InvalidAddress unless ``addr`` has a mailbox."""
        maildir = get_mailbox(self.config, addr).maildir
        if not maildir.is_dir():
            raise InvalidAddress(f"{addr!r} has no mailbox")
        return maildir / METADATA_FILE_NAME

    def tokens(self, addr: str) -> list[str]:
        data = read_json_object(self._path(addr))
        return list(live_tokens(data.get(DEVICETOKEN_KEY), self._clock()))

    def _update(self, addr: str, change: Callable[[dict[str, int], float], dict[str, int]]) -> None:
        path = self._path(addr)
        data = read_json_object(path)
        now = self._clock()
        data[DEVICETOKEN_KEY] = change(live_tokens(data.get(DEVICETOKEN_KEY), now), now)
        write_json_object(path, data)

    def add(self, addr: str, token: str) -> None:
        self._update(addr, lambda tokens, now: with_token(tokens, token, now))

    def remove(self, addr: str, token: str) -> None:
        self._update(addr, lambda tokens, now: {t: ts for t, ts in tokens.items() if t != token})


# --- the dict protocol


@dataclass
class Transaction:
    user: str
    changes: list[tuple[str, str | None]] = field(default_factory=list)  # (key, value or unset)
    unsupported: str | None = None  # why the commit must fail


class MetadataDict:
    """Answers dict requests; one instance serves all connections (transactions are per session)."""

    def __init__(
        self,
        store: TokenStore,
        notifier: Notifier,
        iroh_relay: str | None,
        turn_host: str = "",
        turn_socket: Path | None = None,
        appversions: Path = DEFAULT_APPVERSIONS,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.iroh_relay = iroh_relay
        self.turn_host = turn_host
        self.turn_socket = turn_socket
        # read at each lookup, as upstream does: a changed file takes effect without a restart
        self.appversions = appversions

    async def turn_reply(self) -> bytes:
        """Fresh TURN credentials (see turn.py); not found when the socket does not answer."""
        if self.turn_socket is None:
            return dictproto.NOT_FOUND_REPLY
        try:
            value = metadata_value(self.turn_host, await fetch_credentials(self.turn_socket))
        except (OSError, TimeoutError) as e:
            log.warning("no TURN credentials from %s: %s", self.turn_socket, e)
            return dictproto.NOT_FOUND_REPLY
        if value is None:
            log.warning("no TURN credentials from %s: malformed answer", self.turn_socket)
            return dictproto.NOT_FOUND_REPLY
        return dictproto.ok_reply(value)

    def lookup(self, key: str, user: str) -> dictserver.Reply:
        try:
            scope, name = attribute_name(key)
        except dictproto.ProtocolError:
            return dictproto.NOT_FOUND_REPLY
        if scope == "priv" and name == DEVICETOKEN_KEY:
            try:
                tokens = self.store.tokens(user)
            except (InvalidAddress, OSError) as e:
                log.warning("token lookup for %r failed: %s", user, e)
                return dictproto.FAIL_REPLY
            return dictproto.ok_reply(" ".join(tokens))
        if scope == "shared" and name == TURN_KEY:
            return self.turn_reply()
        if scope == "shared":
            value = self._server_value(name)
            if value is not None:
                return dictproto.ok_reply(value)
        return dictproto.NOT_FOUND_REPLY

    def _server_value(self, name: str) -> str | None:
        if name == IROH_RELAY_KEY:
            return self.iroh_relay or None
        if name == MAX_SMTP_RECIPIENTS_KEY:
            return str(MAX_SMTP_RECIPIENTS)
        if name == APPVERSIONS_KEY:
            return read_appversions(self.appversions)
        return None

    def commit(self, transaction: Transaction) -> bool:
        """Apply the changes of ``transaction``; False if it must fail (nothing applied then,
        unless storage failed half-way)."""
        if transaction.unsupported is not None:
            log.warning("failing transaction of %r: %s", transaction.user, transaction.unsupported)
            return False
        actions: list[Callable[[], None]] = []
        for key, value in transaction.changes:
            action = self._action(transaction.user, key, value)
            if action is None:
                log.warning("failing transaction of %r: cannot store %r", transaction.user, key)
                return False
            actions.append(action)
        try:
            for action in actions:
                action()
        except (InvalidAddress, OSError) as e:
            log.error("transaction of %r failed: %s", transaction.user, e)
            return False
        return True

    def _action(self, user: str, key: str, value: str | None) -> Callable[[], None] | None:
        try:
            scope, name = attribute_name(key)
        except dictproto.ProtocolError:
            return None
        if scope != "priv":
            return None
        if name == DEVICETOKEN_KEY:
            if value is None or not value.strip():
                return lambda: None
            return lambda: self.store.add(user, value)
        if name == MESSAGENEW_KEY and value is not None:
            return lambda: self.notifier.notify(user, self.store.tokens(user))
        return None


class DictSession:
    """One client connection: parses request lines, keeps its transactions."""

    def __init__(self, handler: MetadataDict) -> None:
        self.handler = handler
        self.transactions: dict[str, Transaction] = {}

    def _transaction(self, args: list[str]) -> Transaction:
        try:
            return self.transactions[args[0]]
        except KeyError:
            raise dictproto.ProtocolError(f"unknown transaction {args[0]!r}") from None

    def handle_line(self, raw: bytes) -> dictserver.Reply:
        """handle() for dictserver: a request that breaks the protocol ends the connection."""
        try:
            return self.handle(raw.decode("utf-8"))
        except (dictproto.ProtocolError, UnicodeDecodeError) as e:
            raise dictserver.CloseConnection(str(e)) from e

    def handle(self, line: str) -> dictserver.Reply:
        """The reply to one request line (without newline); None if it takes none.

        Raises ProtocolError for a request that breaks the protocol: the connection must end,
        since the client's idea of which reply belongs to which request is lost.
        """
        request = dictproto.parse_request(line)
        command, args = request.command, request.args

        def need(count: int) -> None:
            if len(args) < count:
                raise dictproto.ProtocolError(f"{command!r} request with too few fields: {line!r}")

        if command == "H":
            return None
        if command == "L":
            need(1)
            return self.handler.lookup(args[0], args[1] if len(args) > 1 else "")
        if command == "I":
            # no attribute is listable: Dovecot only iterates to list or delete a mailbox's
            # attributes, and tokens must survive that
            return dictproto.ITER_END_REPLY
        if command == "B":
            need(1)
            self.transactions[args[0]] = Transaction(user=args[1] if len(args) > 1 else "")
            return None
        if command == "S":
            need(3)
            self._transaction(args).changes.append((args[1], args[2]))
            return None
        if command == "U":
            need(2)
            self._transaction(args).changes.append((args[1], None))
            return None
        if command == "A":
            need(3)
            self._transaction(args).unsupported = f"atomic increment of {args[1]!r}"
            return None
        if command == "T":
            need(1)
            self._transaction(args)  # change timestamps do not matter here
            return None
        if command == "R":
            need(1)
            self.transactions.pop(args[0], None)
            return None
        if command in ("C", "D"):
            need(1)
            transaction = self._transaction(args)
            del self.transactions[args[0]]
            ok = self.handler.commit(transaction)
            return dictproto.commit_reply(args[0], ok, asynchronous=command == "D")
        raise dictproto.ProtocolError(f"unknown command {command!r}")


async def serve(
    socket_path: Path,
    config: Config,
    notify_url: str,
    retry_delay: float,
    workers: int,
    appversions: Path = DEFAULT_APPVERSIONS,
) -> None:
    store = TokenStore(config)
    queue_dir = config.mailboxes_dir / QUEUE_DIR_NAME
    queue_dir.mkdir(mode=0o700, exist_ok=True)
    notifier = Notifier(
        queue_dir, store.remove, url=notify_url, base_delay=retry_delay, workers=workers
    )
    await notifier.start()
    handler = MetadataDict(
        store, notifier, config.iroh_relay, config.mail_domain, config.turn_socket_path,
        appversions,
    )
    try:
        await dictserver.serve_until_stopped(
            socket_path, lambda: DictSession(handler), f"IMAP METADATA, notifying {notify_url}"
        )
    finally:
        await notifier.stop()
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    """Dovecot dict server for IMAP METADATA (push device tokens) and push notifications."""
    parser = argparse.ArgumentParser(prog="chatmail-metadata", description=main.__doc__)
    parser.add_argument("socket", type=Path, help="unix socket to listen on")
    parser.add_argument("chatmail_ini", type=Path, help="path of chatmail.ini")
    parser.add_argument(
        "--notify-url",
        default=DEFAULT_NOTIFY_URL,
        help=f"where notifications are POSTed (default: {DEFAULT_NOTIFY_URL})",
    )
    parser.add_argument(
        "--retry-delay",
        type=positive_float,
        default=RETRY_BASE_DELAY,
        help="seconds before the first retry of a failed notification; each further retry "
        f"waits 8 times longer (default: {RETRY_BASE_DELAY:g})",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        help=f"concurrent notification requests (default: {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--appversions",
        type=Path,
        default=DEFAULT_APPVERSIONS,
        help="JSON file served as /shared/vendor/deltachat/appversions (default: the index "
        "shipped with chatmaild)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    served = read_appversions(args.appversions)
    if served is None:
        log.warning("no app version index in %s: appversions answers not-found", args.appversions)
    else:
        for problem in appversions_problems(json.loads(served)):
            log.error("%s: Delta Chat ignores this app version index: %s", args.appversions, problem)

    try:
        config = read_config(args.chatmail_ini)
    except ConfigError as e:
        log.error("%s", e)
        return 1
    if not config.mailboxes_dir.is_dir():
        log.error("mailboxes_dir does not exist: %s", config.mailboxes_dir)
        return 1
    try:
        asyncio.run(
            serve(
                args.socket,
                config,
                args.notify_url,
                args.retry_delay,
                args.workers,
                args.appversions,
            )
        )
    except (OSError, ValueError) as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
