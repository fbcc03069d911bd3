"""AuthService in-process: any request line gets a reply, no reply, or a deliberate close."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chatmaild.doveauth
from chatmaild.dictproto import passdb_key, request_line
from chatmaild.dictserver import CloseConnection
from chatmaild.doveauth import AuthService

COMMANDS = "HLIBSUATRCDXO\x00"


@pytest.fixture
def service(example_config):
    with ThreadPoolExecutor(2) as executor:
        yield AuthService(example_config, executor)


async def answer(service, line: bytes, transactions: dict) -> bytes | None:
    reply = service.handle_request(line, transactions)
    return await reply if inspect.isawaitable(reply) else reply


def handle(service, line: bytes, transactions: dict) -> bytes | None:
    return asyncio.run(answer(service, line, transactions))


def fields():
    return st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=30), max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(COMMANDS), args=fields(), raw=st.binary(max_size=60))
def test_any_request_is_handled(service, command, args, raw):
    transactions: dict = {"1": []}
    for line in (request_line(command, *args)[:-1], raw.replace(b"\n", b"")):
        try:
            reply = handle(service, line, transactions)
        except CloseConnection:
            continue
        assert reply is None or reply.endswith(b"\n")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    user=st.one_of(
        st.text(max_size=40),
        # near-valid addresses of the domain, with the characters that matter for paths
        st.text(alphabet="ab1./\\-_@\x00 A", min_size=1, max_size=12).map(lambda local: f"{local}@chat.example.org"),
    ),
    password=st.text(max_size=40),
)
def test_any_passdb_lookup_answers_or_creates_inside(service, example_config, user, password):
    reply = handle(service, request_line("L", passdb_key(user, password), user)[:-1], {})
    assert reply == b"N\n" or reply.startswith(b"O{")
    base = example_config.mailboxes_dir
    if base.exists():
        for path in base.parent.rglob("*"):
            assert path == base or base in path.parents


def test_creation_does_not_block_other_lookups(service, monkeypatch):
    """Hashing and writing run in the thread pool: while a creation is slow, lookups of
    existing accounts are still answered at once, and racing creators share one creation."""
    existing = "abcdefghi@chat.example.org"
    new = "newaccoun@chat.example.org"
    assert handle(service, request_line("L", passdb_key(existing, "secret1234"), existing)[:-1], {}).startswith(b"O")
    release = threading.Event()
    hashed = []

    def slow_hash(password: str) -> str:
        hashed.append(password)
        assert release.wait(10)
        return "{SHA512-CRYPT}$6$salt$hash"

    monkeypatch.setattr(chatmaild.doveauth, "hash_password", slow_hash)

    async def scenario():
        lookup = request_line("L", passdb_key(new, "secret1234"), new)[:-1]
        creations = [asyncio.create_task(answer(service, lookup, {})) for _ in range(5)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        reply = await answer(service, request_line("L", f"shared/userdb/{existing}", existing)[:-1], {})
        elapsed = time.monotonic() - started
        assert reply.startswith(b"O{") and elapsed < 0.05
        assert not any(c.done() for c in creations)
        release.set()
        return await asyncio.gather(*creations)

    replies = asyncio.run(scenario())
    assert len(set(replies)) == 1 and b"$6$salt$hash" in replies[0]
    assert hashed == ["secret1234"]
