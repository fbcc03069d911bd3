"""SHA512-CRYPT hashing: compatible with crypt(3), both through ctypes and the crypt_r fallback."""

from __future__ import annotations

import crypt_r
import pytest

from chatmaild import passwords
from chatmaild.passwords import SCHEME_PREFIX, hash_password, verify_password


@pytest.mark.parametrize("use_ctypes", [True, False])
def test_hash_is_sha512_crypt(monkeypatch, use_ctypes):
    if not use_ctypes:
        monkeypatch.setattr(passwords, "_crypt_rn", None)
    hashed = hash_password("sëcret p\"w'\\d")
    assert hashed.startswith(SCHEME_PREFIX + "$6$")
    salt = hashed[len(SCHEME_PREFIX) :].split("$")[2]
    assert len(salt) == 16
    assert crypt_r.crypt("sëcret p\"w'\\d", hashed[len(SCHEME_PREFIX) :]) == hashed[len(SCHEME_PREFIX) :]
    assert verify_password("sëcret p\"w'\\d", hashed)
    assert not verify_password("sëcret", hashed)
    assert hash_password("same") != hash_password("same")  # random salt


def test_ctypes_path_is_available():
    # the path that releases the GIL while hashing (see passwords._crypt_without_gil)
    assert passwords._crypt_rn is not None


def test_verify_rejects_other_schemes_and_nul():
    assert not verify_password("x", "{PLAIN}x")
    assert not verify_password("a\x00b", hash_password("a"))
    with pytest.raises(ValueError):
        hash_password("a\x00b")
