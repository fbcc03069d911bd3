"""doveauth: Dovecot passdb/userdb over the dict protocol, creating accounts on first login.

Usage: ``doveauth SOCKET_PATH INI_PATH``

Dovecot's ``dict`` passdb/userdb (``uri = proxy:SOCKET_PATH:auth``, see the README) asks for
``shared/passdb/<password>"<user>``; doveauth answers with the stored SHA512-CRYPT hash and Dovecot
checks the password against it. An unknown, valid address is created by that first lookup, with
the given password. Dovecot's last_login plugin may use the same socket
(``last_login_dict = proxy:SOCKET_PATH:lastlogin``): its commits set the day of the last login.

One asyncio event loop serves all connections; hashing and file writes of new accounts run in a
thread pool, so lookups of existing accounts never wait for them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sys
from collections.abc import Coroutine
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .account_store import CACHE_MAX_ENTRIES, Account, AccountStore, CreationFailed
from .accounts import creation_refusal, get_mailbox
from .config import Config, ConfigError, nocreate_path, read_config
from .dictproto import (
    FAIL_REPLY,
    ITER_END_REPLY,
    NOT_FOUND_REPLY,
    LastLoginKey,
    PassdbKey,
    ProtocolError,
    UserdbKey,
    commit_reply,
    iter_row,
    ok_reply,
    parse_key,
    parse_request,
)
from .dictserver import CloseConnection, Reply, serve_until_stopped
from .passwords import hash_password
from .syslimits import limit_refusal, read_resources

log = logging.getLogger("doveauth")

# system user and group owning the mailboxes (upstream's fixed name)
MAIL_USER = "vmail"
USERDB_ITERATE_PATH = "shared/userdb/"
Transactions = dict[str, list[tuple[str, str]]]  # open transaction id -> its (key, value) sets


class AuthService:
    def __init__(self, config: Config, executor: Executor) -> None:
        self.config = config
        self.store = AccountStore(config)
        self.executor = executor
        # address -> creation in progress, shared by all lookups racing for the same new account
        self._creating: dict[str, asyncio.Future[str]] = {}
        # address -> (account, encoded reply); reused while the store returns the same account
        self._replies: dict[str, tuple[Account, bytes]] = {}

    # --- replies

    def _account_reply(self, addr: str, account: Account) -> bytes:
        cached = self._replies.get(addr)
        if cached is not None and cached[0] is account:
            return cached[1]
        fields = {
            "addr": addr,
            "home": str(account.mailbox.maildir),
            "uid": MAIL_USER,
            "gid": MAIL_USER,
            "password": account.password_hash,
        }
        reply = ok_reply(json.dumps(fields))
        if len(self._replies) >= CACHE_MAX_ENTRIES:
            self._replies.clear()  # rebuilt on demand; keeps memory bounded
        self._replies[addr] = (account, reply)
        return reply

    def passdb(self, addr: str, password: str) -> bytes | Coroutine[Any, Any, bytes]:
        """The reply at once for an existing account, else a coroutine that may create it."""
        account = self.store.lookup(addr)
        if account is None:
            return self._create_reply(addr, password)
        return self._account_reply(addr, account)

    async def _create_reply(self, addr: str, password: str) -> bytes:
        try:
            account = await self._create(addr, password)
        except CreationFailed as e:
            log.error("%s", e)
            return FAIL_REPLY
        return NOT_FOUND_REPLY if account is None else self._account_reply(addr, account)

    def userdb(self, addr: str) -> bytes:
        account = self.store.lookup(addr)
        return NOT_FOUND_REPLY if account is None else self._account_reply(addr, account)

    async def _create(self, addr: str, password: str) -> Account | None:
        refusal = creation_refusal(self.config, addr, password, nocreate_path().exists())
        if refusal is not None:
            log.info("not creating %r: %s", addr, refusal)
            return None
        limit = limit_refusal(self.config, read_resources(self.config.mailboxes_dir))
        if limit is not None:
            # upstream's log line; chatmail-metrics counts it (rejected_registrations)
            log.warning("registration rejected: %s", limit)
            return None
        creation = self._creating.get(addr)
        if creation is None:
            loop = asyncio.get_running_loop()
            hash_new_password = functools.partial(hash_password, password)
            creation = loop.run_in_executor(
                self.executor, self.store.create, get_mailbox(self.config, addr), hash_new_password
            )
            self._creating[addr] = creation
            creation.add_done_callback(lambda _: self._creating.pop(addr, None))
        # shielded: a client hanging up must not cancel the creation other lookups wait for
        await asyncio.shield(creation)
        return self.store.lookup(addr)

    async def iterate(self, args: list[str]) -> bytes:
        if len(args) < 3 or not args[0].isdigit() or not args[1].isdigit():
            return FAIL_REPLY
        max_rows, path = int(args[1]), args[2]
        if path != USERDB_ITERATE_PATH:
            return ITER_END_REPLY
        loop = asyncio.get_running_loop()
        addresses = await loop.run_in_executor(self.executor, self.store.addresses)
        if max_rows:
            addresses = addresses[:max_rows]
        return b"".join(iter_row(USERDB_ITERATE_PATH + addr) for addr in addresses) + ITER_END_REPLY

    def commit(self, changes: list[tuple[str, str]]) -> bool:
        ok = True
        for key, value in changes:
            try:
                parsed = parse_key(key)
            except ProtocolError:
                parsed = None
            if isinstance(parsed, LastLoginKey) and value.isdigit():
                self.store.record_login(parsed.user, int(value))
            else:
                log.warning("cannot store %r", key)
                ok = False
        return ok

    # --- protocol

    def handle_request(self, raw: bytes, transactions: Transactions) -> Reply:
        """The reply to one request line: bytes, None if the command has none, or a coroutine
        for requests that wait for the thread pool (creating an account, iterating)."""
        try:
            request = parse_request(raw.decode("utf-8"))
        except (UnicodeDecodeError, ProtocolError):
            log.warning("malformed request %r", raw[:200])
            return FAIL_REPLY
        cmd, args = request.command, request.args
        if cmd == "L":
            try:
                key = parse_key(args[0])
            except ProtocolError:
                log.warning("lookup of unsupported key %r", args[0][:200])
                return FAIL_REPLY
            if isinstance(key, PassdbKey):
                return self.passdb(key.user, key.password)
            if isinstance(key, UserdbKey):
                return self.userdb(key.user)
            return FAIL_REPLY
        if cmd == "I":
            return self.iterate(args)
        if cmd == "H":
            return None
        return self._transaction_step(cmd, args, transactions)

    def _transaction_step(self, cmd: str, args: list[str], transactions: Transactions) -> bytes | None:
        tid = args[0]
        if cmd == "B":
            if not tid.isdigit() or tid in transactions:
                raise CloseConnection(f"bad transaction id {tid!r}")
            transactions[tid] = []
            return None
        if cmd in "SUATRCD":
            if tid not in transactions:
                raise CloseConnection(f"unknown transaction id {tid!r}")
            if cmd == "S":
                if len(args) != 3:
                    raise CloseConnection("SET needs id, key and value")
                transactions[tid].append((args[1], args[2]))
            elif cmd == "R":
                del transactions[tid]
            elif cmd in "CD":
                return commit_reply(tid, self.commit(transactions.pop(tid)), asynchronous=cmd == "D")
            # U(nset), A(tomic increment), T(imestamp): nothing of ours uses them; ignored
            return None
        log.warning("unknown command %r", cmd)
        return FAIL_REPLY


class AuthSession:
    """One client connection's state: its open transactions."""

    def __init__(self, service: AuthService) -> None:
        self.service = service
        self.transactions: Transactions = {}

    def handle_line(self, raw: bytes) -> Reply:
        return self.service.handle_request(raw, self.transactions)


async def serve(socket_path: Path, config: Config) -> None:
    """Serve until SIGTERM or SIGINT; the socket is removed on the way out."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="doveauth") as executor:
        service = AuthService(config, executor)
        await serve_until_stopped(
            socket_path,
            lambda: AuthSession(service),
            f"accounts of {config.mail_domain} in {config.mailboxes_dir}",
        )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: doveauth SOCKET_PATH INI_PATH", file=sys.stderr)
        return 2
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    try:
        config = read_config(args[1])
    except ConfigError as e:
        log.error("%s", e)
        return 1
    try:
        asyncio.run(serve(Path(args[0]), config))
    except OSError as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
