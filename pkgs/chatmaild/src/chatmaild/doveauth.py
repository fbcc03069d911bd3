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
import signal
import stat
import sys
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

from .account_store import CACHE_MAX_ENTRIES, Account, AccountStore, CreationFailed
from .accounts import creation_refusal, get_mailbox
from .config import Config, ConfigError, nocreate_path, read_config
from .dictproto import (
    FAIL_REPLY,
    ITER_END_REPLY,
    MAX_LINE_LENGTH,
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
from .passwords import hash_password

log = logging.getLogger("doveauth")

# system user and group owning the mailboxes (upstream's fixed name)
MAIL_USER = "vmail"
USERDB_ITERATE_PATH = "shared/userdb/"
# Group may read and write: the socket hands out password hashes and creates accounts, so it must
# never be world-accessible; the group bit lets a deployment admit Dovecot's user via a group.
SOCKET_MODE = 0o660
WRITE_BUFFER_HIGH = 256 * 1024


class _CloseConnection(Exception):
    """The client broke the protocol in a way that leaves no sensible reply."""


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

    async def passdb(self, addr: str, password: str) -> bytes:
        account = self.store.lookup(addr)
        if account is None:
            account = await self._create(addr, password)
            if account is None:
                return NOT_FOUND_REPLY
        return self._account_reply(addr, account)

    def userdb(self, addr: str) -> bytes:
        account = self.store.lookup(addr)
        return NOT_FOUND_REPLY if account is None else self._account_reply(addr, account)

    async def _create(self, addr: str, password: str) -> Account | None:
        refusal = creation_refusal(self.config, addr, password, nocreate_path().exists())
        if refusal is not None:
            log.info("not creating %r: %s", addr, refusal)
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

    async def handle_request(self, raw: bytes, transactions: dict[str, list[tuple[str, str]]]) -> bytes | None:
        """The reply to one request line (None if the command has none)."""
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
                return await self.passdb(key.user, key.password)
            if isinstance(key, UserdbKey):
                return self.userdb(key.user)
            return FAIL_REPLY
        if cmd == "I":
            return await self.iterate(args)
        if cmd == "H":
            return None
        return self._transaction_step(cmd, args, transactions)

    def _transaction_step(self, cmd: str, args: list[str], transactions: dict[str, list[tuple[str, str]]]) -> bytes | None:
        tid = args[0]
        if cmd == "B":
            if not tid.isdigit() or tid in transactions:
                raise _CloseConnection(f"bad transaction id {tid!r}")
            transactions[tid] = []
            return None
        if cmd in "SUATRCD":
            if tid not in transactions:
                raise _CloseConnection(f"unknown transaction id {tid!r}")
            if cmd == "S":
                if len(args) != 3:
                    raise _CloseConnection("SET needs id, key and value")
                transactions[tid].append((args[1], args[2]))
            elif cmd == "R":
                del transactions[tid]
            elif cmd in "CD":
                return commit_reply(tid, self.commit(transactions.pop(tid)), asynchronous=cmd == "D")
            # U(nset), A(tomic increment), T(imestamp): nothing of ours uses them; ignored
            return None
        log.warning("unknown command %r", cmd)
        return FAIL_REPLY

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transactions: dict[str, list[tuple[str, str]]] = {}
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    break  # end of input (a last line without newline is dropped)
                except asyncio.LimitOverrunError:
                    log.warning("request line longer than %d bytes; closing connection", MAX_LINE_LENGTH)
                    break
                try:
                    reply = await self.handle_request(line[:-1], transactions)
                except _CloseConnection as e:
                    log.warning("protocol error, closing connection: %s", e)
                    break
                except CreationFailed as e:
                    log.error("%s", e)
                    reply = FAIL_REPLY
                except Exception:
                    log.exception("failed to handle %r", line[:200])
                    reply = FAIL_REPLY
                if reply:
                    writer.write(reply)
                    if writer.transport.get_write_buffer_size() > WRITE_BUFFER_HIGH:
                        await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def _remove_stale_socket(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SystemExit(f"doveauth: {path} exists and is not a socket; not removing it")
    path.unlink()


async def serve(socket_path: Path, config: Config) -> None:
    """Serve until SIGTERM or SIGINT; the socket is removed on the way out."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="doveauth") as executor:
        service = AuthService(config, executor)
        _remove_stale_socket(socket_path)
        old_umask = os.umask(0o777 & ~SOCKET_MODE)  # no window in which the socket is wider open
        try:
            server = await asyncio.start_unix_server(
                service.serve_connection, path=str(socket_path), limit=MAX_LINE_LENGTH, backlog=1024
            )
        finally:
            os.umask(old_umask)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        log.info("listening on %s for %s (mailboxes in %s)", socket_path, config.mail_domain, config.mailboxes_dir)
        await stopping.wait()
        log.info("stopping")
        server.close()
        socket_path.unlink(missing_ok=True)


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
    asyncio.run(serve(Path(args[0]), config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
