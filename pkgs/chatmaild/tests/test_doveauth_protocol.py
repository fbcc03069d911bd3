"""The dict protocol helpers, checked against the lines Dovecot 2.3 sends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatmaild.dictproto import (
    LastLoginKey,
    PassdbKey,
    ProtocolError,
    UserdbKey,
    commit_reply,
    iter_row,
    ok_reply,
    parse_key,
    parse_request,
    passdb_key,
    percent_e_escape,
    split_quoted,
    tab_escape,
    tab_unescape,
)


@given(st.text())
def test_tab_escape_roundtrip(value):
    escaped = tab_escape(value)
    assert not set("\t\n\r\x00") & set(escaped)
    assert tab_unescape(escaped) == value


def test_tab_unescape_known_sequences():
    assert tab_unescape("a\x01tb\x01nc\x01rd\x010e\x011f\x01xg") == "a\tb\nc\rd\x00e\x01fxg"
    with pytest.raises(ProtocolError):
        tab_unescape("abc\x01")


@given(st.text(), st.text())
def test_percent_e_split_roundtrip(password, user):
    assert split_quoted(percent_e_escape(password) + '"' + percent_e_escape(user)) == [password, user]


def test_split_quoted_rejects_trailing_backslash():
    with pytest.raises(ProtocolError):
        split_quoted('pw"user\\')


def test_parse_lookup_line_as_dovecot_sends_it():
    # captured from Dovecot 2.3.19 for password p"w'\d/x y (see tests/test_doveauth_dovecot.py)
    line = "Lshared/passdb/p\\\"w\\'\\\\d/x y\"abc@x.org\tabc@x.org"
    request = parse_request(line)
    assert request.command == "L"
    assert request.args[1] == "abc@x.org"
    assert parse_key(request.args[0]) == PassdbKey(user="abc@x.org", password="p\"w'\\d/x y")


def test_parse_upstream_test_key():
    key = 'shared/passdb/laksjdlaksjdlak\\\\sjdlk\\"12j\\\'3l1/k2j3123"some42123@chat.example.org'
    assert parse_key(key) == PassdbKey(user="some42123@chat.example.org", password="laksjdlaksjdlak\\sjdlk\"12j'3l1/k2j3123")


def test_parse_other_keys():
    assert parse_key("shared/userdb/a@b.org") == UserdbKey(user="a@b.org")
    assert parse_key("shared/last-login/a@b.org") == LastLoginKey(user="a@b.org")


@pytest.mark.parametrize(
    "key",
    ["", "shared", "shared/", "private/passdb/pw\"a@b", "shared/passdb/nouser", 'shared/passdb/a"b"c',
     'shared/userdb/a"b', "shared/last-login/", "shared/metadata/x"],
)
def test_parse_unsupported_keys(key):
    with pytest.raises(ProtocolError):
        parse_key(key)


def test_parse_request_fields_are_unescaped():
    assert parse_request("S1\tkey\x01tx\tvalue").args == ["1", "key\tx", "value"]
    with pytest.raises(ProtocolError):
        parse_request("")


def test_replies():
    assert ok_reply('{"a": "b\\tc"}') == b'O{"a": "b\\tc"}\n'
    assert ok_reply("a\tb") == b"Oa\x01tb\n"
    assert iter_row("shared/userdb/a@b") == b"Oshared/userdb/a@b\t\n"
    assert commit_reply("7", ok=True, asynchronous=False) == b"O7\n"
    assert commit_reply("7", ok=False, asynchronous=True) == b"AF7\n"


def test_passdb_key_like_dovecot():
    assert passdb_key("abc@x.org", "p\"w'\\d") == "shared/passdb/p\\\"w\\'\\\\d\"abc@x.org"
