"""AuthService in-process: any request line gets a reply, no reply, or a deliberate close."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatmaild.dictproto import passdb_key, request_line
from chatmaild.doveauth import AuthService, _CloseConnection

COMMANDS = "HLIBSUATRCDXO\x00"


@pytest.fixture
def service(example_config):
    with ThreadPoolExecutor(2) as executor:
        yield AuthService(example_config, executor)


def handle(service, line: bytes, transactions: dict) -> bytes | None:
    return asyncio.run(service.handle_request(line, transactions))


def fields():
    return st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=30), max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(COMMANDS), args=fields(), raw=st.binary(max_size=60))
def test_any_request_is_handled(service, command, args, raw):
    transactions: dict = {"1": []}
    for line in (request_line(command, *args)[:-1], raw.replace(b"\n", b"")):
        try:
            reply = handle(service, line, transactions)
        except _CloseConnection:
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
