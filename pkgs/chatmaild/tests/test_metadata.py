"""chatmail-metadata: token rules, the dict protocol session, and the daemon over its socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_notifier import WAIT, FakeEndpoint, free_port

from chatmaild import dictproto
from chatmaild.config import Config
from chatmaild.metadata import (
    APPVERSIONS_KEY,
    DEFAULT_APPVERSIONS,
    IROH_RELAY_KEY,
    MAX_SMTP_RECIPIENTS_KEY,
    MAX_TOKENS_PER_MAILBOX,
    TOKEN_MAX_AGE,
    DictSession,
    MetadataDict,
    TokenStore,
    appversions_problems,
    attribute_name,
    live_tokens,
    main,
    read_appversions,
    with_token,
)
from chatmaild.notifier import QUEUE_DIR_NAME

ADDR = "user1abcd@chat.example.org"
GUID = "5cbe730f146fea6535be0d003dd4fc98"
DEVICETOKEN = f"priv/{GUID}/devicetoken"
MESSAGENEW = f"priv/{GUID}/messagenew"


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    server = FakeEndpoint()
    yield server
    server.close()


# --- rules


def test_live_tokens_drop_expired_and_future_ones() -> None:
    now = 1_700_000_000
    stored = {
        "fresh": now - 10,
        "old": now - TOKEN_MAX_AGE - 1,
        "future": now + 3600,
        "garbage": "yesterday",
    }
    assert live_tokens(stored, now) == {"fresh": now - 10}


def test_live_tokens_read_upstreams_old_list_format() -> None:
    assert live_tokens(["a", "b"], 1000) == {"a": 1000, "b": 1000}
    assert live_tokens("nonsense", 1000) == {}


def test_with_token_refreshes_and_keeps_the_newest() -> None:
    tokens = {f"t{i}": i for i in range(MAX_TOKENS_PER_MAILBOX)}
    updated = with_token(tokens, "t0", 1000)
    assert updated["t0"] == 1000 and len(updated) == MAX_TOKENS_PER_MAILBOX
    updated = with_token(tokens, "new", 1000)
    assert "new" in updated and "t0" not in updated and len(updated) == MAX_TOKENS_PER_MAILBOX


def test_attribute_name() -> None:
    assert attribute_name(DEVICETOKEN) == ("priv", "devicetoken")
    assert attribute_name(f"shared/{GUID}/{IROH_RELAY_KEY}") == ("shared", IROH_RELAY_KEY)
    for bad in ("priv", "priv/guid", "priv//devicetoken", "other/guid/devicetoken"):
        with pytest.raises(dictproto.ProtocolError):
            attribute_name(bad)


# --- the protocol session, in-process


class RecordingNotifier:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def notify(self, addr: str, tokens: list[str]) -> None:
        self.calls.append((addr, list(tokens)))


@pytest.fixture
def mailbox(example_config: Config) -> Path:
    maildir = example_config.mailboxes_dir / ADDR
    maildir.mkdir(parents=True)
    return maildir


@pytest.fixture
def session(example_config: Config, mailbox: Path) -> DictSession:
    handler = MetadataDict(TokenStore(example_config), RecordingNotifier(), "https://iroh.example/")
    return DictSession(handler)


def run(session: DictSession, *lines: str) -> list[bytes]:
    replies = [session.handle(line) for line in lines]
    return [r for r in replies if r is not None]


def set_lines(tx: str, key: str, value: str, user: str = ADDR) -> list[str]:
    return [f"B{tx}\t{user}", f"S{tx}\t{key}\t{dictproto.tab_escape(value)}", f"C{tx}"]


def test_set_and_lookup_tokens(session: DictSession, mailbox: Path) -> None:
    assert run(session, "H3\t2\t0\t\tmetadata") == []
    assert run(session, *set_lines("1", DEVICETOKEN, "tok1")) == [b"O1\n"]
    assert run(session, *set_lines("2", DEVICETOKEN, "tok2")) == [b"O2\n"]
    assert run(session, f"L{DEVICETOKEN}\t{ADDR}") == [b"Otok1 tok2\n"]
    stored = json.loads((mailbox / "metadata.json").read_text())
    assert sorted(stored["devicetoken"]) == ["tok1", "tok2"]
    assert (mailbox / "metadata.json").stat().st_mode & 0o777 == 0o600


def test_tokens_keep_escaped_characters_and_trailing_spaces(session: DictSession) -> None:
    token = "openpgp:line1\nline2\twith tab   "
    assert run(session, *set_lines("1", DEVICETOKEN, token)) == [b"O1\n"]
    [reply] = run(session, f"L{DEVICETOKEN}\t{ADDR}")
    assert dictproto.parse_request(reply.decode()[:-1]).args == [token]


def test_lookup_without_tokens_answers_empty_value_like_upstream(session: DictSession) -> None:
    assert run(session, f"L{DEVICETOKEN}\t{ADDR}") == [b"O\n"]


def test_changes_take_effect_at_commit_and_rollback_discards(session: DictSession) -> None:
    lookup = f"L{DEVICETOKEN}\t{ADDR}"
    assert run(session, f"B1\t{ADDR}", f"S1\t{DEVICETOKEN}\tgone", lookup, "R1", lookup) == [
        b"O\n",
        b"O\n",
    ]


def test_messagenew_notifies_every_token(session: DictSession) -> None:
    run(session, *set_lines("1", DEVICETOKEN, "tok1"), *set_lines("2", DEVICETOKEN, "tok2"))
    assert run(session, *set_lines("3", MESSAGENEW, "")) == [b"O3\n"]
    assert session.handler.notifier.calls == [(ADDR, ["tok1", "tok2"])]  # type: ignore[attr-defined]


def test_unknown_keys_fail_the_commit(session: DictSession) -> None:
    assert run(session, *set_lines("1", f"priv/{GUID}/comment", "x")) == [b"F1\n"]
    assert run(session, *set_lines("2", f"shared/{GUID}/devicetoken", "x")) == [b"F2\n"]
    assert run(session, f"B3\t{ADDR}", f"A3\t{DEVICETOKEN}\t1", "C3") == [b"F3\n"]
    # a failing change keeps the good ones of the same transaction from being applied
    assert run(
        session, f"B4\t{ADDR}", f"S4\t{DEVICETOKEN}\ttok", f"S4\tpriv/{GUID}/x\ty", "C4"
    ) == [b"F4\n"]
    assert run(session, f"L{DEVICETOKEN}\t{ADDR}") == [b"O\n"]


def test_unset_of_a_token_is_accepted_and_changes_nothing(session: DictSession) -> None:
    run(session, *set_lines("1", DEVICETOKEN, "tok1"))
    assert run(session, f"B2\t{ADDR}", f"U2\t{DEVICETOKEN}", "C2") == [b"O2\n"]
    assert run(session, f"L{DEVICETOKEN}\t{ADDR}") == [b"Otok1\n"]


@pytest.mark.parametrize("user", ["nobody2xy@chat.example.org", "../../etc@chat.example.org", ""])
def test_users_without_a_mailbox_fail(session: DictSession, user: str) -> None:
    assert run(session, *set_lines("1", DEVICETOKEN, "t", user=user)) == [b"F1\n"]
    assert run(session, f"L{DEVICETOKEN}\t{user}") == [b"F\n"]


def test_other_lookups_and_iteration(session: DictSession) -> None:
    assert run(session, f"Lshared/{GUID}/{IROH_RELAY_KEY}\t{ADDR}") == [b"Ohttps://iroh.example/\n"]
    assert run(session, f"Lpriv/{GUID}/comment\t{ADDR}", f"Lnonsense\t{ADDR}") == [b"N\n", b"N\n"]
    assert run(session, f"I9\t0\tpriv/{GUID}/\t{ADDR}") == [b"\n"]


def test_server_metadata_as_upstream_1_12(session: DictSession) -> None:
    lookup = f"Lshared/{GUID}/{{}}\t{ADDR}"
    assert run(session, lookup.format(MAX_SMTP_RECIPIENTS_KEY)) == [b"O1000\n"]
    [appversions] = run(session, lookup.format(APPVERSIONS_KEY))
    assert appversions.startswith(b"O") and appversions.count(b"\n") == 1
    assert json.loads(appversions[1:]) == json.loads(DEFAULT_APPVERSIONS.read_text())
    # other names under the same prefix, and the same names as private attributes
    unknown = lookup.format(MAX_SMTP_RECIPIENTS_KEY.replace("maxsmtprecipients", "unknown"))
    assert run(session, unknown, f"Lpriv/{GUID}/{MAX_SMTP_RECIPIENTS_KEY}\t{ADDR}") == [
        b"N\n",
        b"N\n",
    ]


def test_appversions_file_is_read_at_each_lookup(example_config: Config, tmp_path: Path) -> None:
    path = tmp_path / "appversions.json"
    handler = MetadataDict(TokenStore(example_config), RecordingNotifier(), None, appversions=path)
    session = DictSession(handler)
    lookup = f"Lshared/{GUID}/{APPVERSIONS_KEY}\t{ADDR}"
    assert run(session, lookup) == [b"N\n"]
    # pretty-printed, with a newline inside a string: served as one line all the same
    path.write_text('{\n  "clients": [{"clientId": "one\\ntwo", "sources": []}]\n}\n')
    assert run(session, lookup) == [b'O{"clients":[{"clientId":"one\\ntwo","sources":[]}]}\n']
    path.write_text("not json")
    assert run(session, lookup) == [b"N\n"]
    assert read_appversions(path) is None


def test_shipped_appversions_are_what_core_reads() -> None:
    assert appversions_problems(json.loads(DEFAULT_APPVERSIONS.read_text())) == []


SOURCE = "clients[0].sources[0]"


def shipped_source() -> tuple[dict, dict]:
    data = json.loads(DEFAULT_APPVERSIONS.read_text())
    return data, data["clients"][0]["sources"][0]


@pytest.mark.parametrize("value", [True, -1, 2**32, "754", 754.0, None])
def test_appversions_version_integer_must_be_u32(value: object) -> None:
    data, source = shipped_source()
    source["versionInteger"] = value
    assert appversions_problems(data) == [
        f"{SOURCE}.versionInteger: expected an integer from 0 to 2^32-1"
    ]


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda d, s: d.update(extra=1), 'expected an object with the one key "clients"'),
        (lambda d, s: d.update(clients={}), '"clients" is not a list'),
        (
            lambda d, s: d["clients"][0].update(clientIds="x"),
            'clients[0]: expected the keys "clientId" and "sources"',
        ),
        (
            lambda d, s: d["clients"][0].update(clientId=""),
            "clients[0].clientId: expected a non-empty string",
        ),
        (
            lambda d, s: s.pop("downloadUrl"),
            f"{SOURCE}: expected the keys sourceId, versionInteger, versionString, downloadUrl",
        ),
        (
            lambda d, s: s.update(versionString=2),
            f"{SOURCE}.versionString: expected a non-empty string",
        ),
    ],
)
def test_appversions_problems_name_the_place(change: Callable, problem: str) -> None:
    data, source = shipped_source()
    change(data, source)
    assert appversions_problems(data) == [problem]


@pytest.mark.parametrize("line", ["", "X1", "S1\tkey\tvalue", "C7", "S", "U1", "Lkey\x01"])
def test_malformed_requests_raise_protocol_error(session: DictSession, line: str) -> None:
    with pytest.raises(dictproto.ProtocolError):
        session.handle(line)


# --- the daemon


class DictClient:
    """Speaks the dict protocol to a running chatmail-metadata, like Dovecot's proxy client."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT)
        self.sock.connect(os.fspath(path))
        self.file = self.sock.makefile("rwb")
        self.send("H3\t2\t0\t\tmetadata")

    def send(self, line: str) -> None:
        self.file.write(line.encode() + b"\n")
        self.file.flush()

    def reply(self) -> bytes:
        return self.file.readline()

    def set(self, key: str, value: str, user: str = ADDR, tx: str = "1") -> bytes:
        for line in set_lines(tx, key, value, user):
            self.send(line)
        return self.reply()

    def lookup(self, key: str, user: str = ADDR) -> bytes:
        self.send(f"L{key}\t{user}")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Daemon:
    def __init__(
        self, ini: Path, socket_path: Path, log: Path, notify_url: str, *extra: str
    ) -> None:
        self.args = [
            str(Path(sys.executable).with_name("chatmail-metadata")),
            str(socket_path),
            str(ini),
            "--notify-url",
            notify_url,
            "--retry-delay",
            "0.2",
            *extra,
        ]
        self.socket_path = socket_path
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + WAIT
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                DictClient(self.socket_path).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "daemon did not listen in time"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            assert self.process.wait(WAIT) == 0, self.log.read_text()
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.process = None

    def client(self) -> DictClient:
        return DictClient(self.socket_path)


@pytest.fixture
def start_daemon(
    make_ini: Callable[..., Path], tmp_path: Path
) -> Iterator[Callable[[str], Daemon]]:
    ini = make_ini()
    mailboxes_dir = tmp_path / "mail" / "chat.example.org"
    (mailboxes_dir / ADDR).mkdir(parents=True)
    daemons: list[Daemon] = []

    def start(notify_url: str, *extra: str) -> Daemon:
        daemon = Daemon(
            ini, tmp_path / "metadata.socket", tmp_path / "daemon.log", notify_url, *extra
        )
        daemon.start()
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.stop()


def queue_entries(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "mail" / "chat.example.org" / QUEUE_DIR_NAME).iterdir())


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_daemon_tokens_survive_a_restart(
    start_daemon: Callable[[str], Daemon], endpoint: FakeEndpoint
) -> None:
    daemon = start_daemon(endpoint.url)
    client = daemon.client()
    assert client.set(DEVICETOKEN, "tok1") == b"O1\n"
    assert client.lookup(DEVICETOKEN) == b"Otok1\n"
    client.close()
    daemon.stop()
    daemon.start()
    client = daemon.client()
    assert client.lookup(DEVICETOKEN) == b"Otok1\n"
    client.close()


def test_daemon_posts_the_token_when_a_message_arrives(
    start_daemon: Callable[[str], Daemon], endpoint: FakeEndpoint, tmp_path: Path
) -> None:
    client = start_daemon(endpoint.url).client()
    client.set(DEVICETOKEN, "openpgp:tok1")
    assert client.set(MESSAGENEW, "", tx="2") == b"O2\n"
    assert endpoint.wait_for_requests(1) == [b"openpgp:tok1"]
    wait_until(lambda: not queue_entries(tmp_path))
    client.close()


def test_daemon_retries_until_the_endpoint_is_up(
    start_daemon: Callable[[str], Daemon], tmp_path: Path
) -> None:
    port = free_port()
    client = start_daemon(f"http://127.0.0.1:{port}/notify").client()
    client.set(DEVICETOKEN, "tok1")
    client.set(MESSAGENEW, "", tx="2")
    time.sleep(0.3)  # the first attempt failed
    assert len(queue_entries(tmp_path)) == 1
    endpoint = FakeEndpoint(port)
    try:
        assert endpoint.wait_for_requests(1) == [b"tok1"]
    finally:
        endpoint.close()
    client.close()


def test_daemon_keeps_pending_notifications_over_a_restart(
    start_daemon: Callable[[str], Daemon], tmp_path: Path
) -> None:
    port = free_port()
    daemon = start_daemon(f"http://127.0.0.1:{port}/notify")
    client = daemon.client()
    client.set(DEVICETOKEN, "tok1")
    client.set(MESSAGENEW, "", tx="2")
    client.close()
    daemon.stop()
    assert len(queue_entries(tmp_path)) == 1
    endpoint = FakeEndpoint(port)
    try:
        daemon.start()
        assert endpoint.wait_for_requests(1) == [b"tok1"]
        wait_until(lambda: not queue_entries(tmp_path))
    finally:
        endpoint.close()


def test_daemon_serves_the_given_app_version_index(
    start_daemon: Callable[..., Daemon], endpoint: FakeEndpoint, tmp_path: Path
) -> None:
    index = tmp_path / "appversions.json"
    data, source = shipped_source()
    source["versionInteger"] = "754"  # core would drop the whole index: said at start
    index.write_text(json.dumps(data))
    daemon = start_daemon(endpoint.url, "--appversions", str(index))
    client = daemon.client()
    assert client.lookup(f"shared/{GUID}/{MAX_SMTP_RECIPIENTS_KEY}") == b"O1000\n"
    assert json.loads(client.lookup(f"shared/{GUID}/{APPVERSIONS_KEY}")[1:]) == data
    client.close()
    assert (
        f"{index}: Delta Chat ignores this app version index: clients[0].sources[0]"
        ".versionInteger: expected an integer" in daemon.log.read_text()
    )


def test_daemon_survives_malformed_input(
    start_daemon: Callable[[str], Daemon], endpoint: FakeEndpoint
) -> None:
    daemon = start_daemon(endpoint.url)
    for garbage in [b"Xjunk\n", b"S99\tkey\tvalue\n", b"\xff\xfe\n", b"L" + b"a" * 70_000 + b"\n"]:
        client = daemon.client()
        client.file.write(garbage)
        client.file.flush()
        if len(garbage) > 70_000:
            assert client.reply() == b"F\n"  # a line over the limit is answered before the end
        assert client.reply() == b""  # the daemon ended this connection
        client.close()
    client = daemon.client()
    assert client.set(DEVICETOKEN, "tok1") == b"O1\n"
    client.close()
    assert "Traceback" not in daemon.log.read_text()


def test_daemon_refuses_to_start_without_mailboxes_dir_or_socket_dir(
    make_ini: Callable[..., Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ini = make_ini()
    assert main([str(tmp_path / "s.sock"), str(ini)]) == 1
    assert "mailboxes_dir does not exist" in caplog.text
    (tmp_path / "mail" / "chat.example.org").mkdir(parents=True)
    assert main([str(tmp_path / "missing" / "s.sock"), str(ini)]) == 1
    assert f"cannot listen on {tmp_path / 'missing' / 's.sock'}" in caplog.text
    (tmp_path / "s.sock").write_text("not a socket")
    assert main([str(tmp_path / "s.sock"), str(ini)]) == 1
    assert (tmp_path / "s.sock").read_text() == "not a socket"
