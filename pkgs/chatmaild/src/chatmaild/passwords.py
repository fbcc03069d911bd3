"""SHA512-CRYPT password hashes, in the form Dovecot's passdb expects (``{SHA512-CRYPT}$6$…``)."""

from __future__ import annotations

import ctypes
import secrets
from collections.abc import Callable

import crypt_r

SCHEME_PREFIX = "{SHA512-CRYPT}"
_SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# larger than libxcrypt's struct crypt_data (32 KiB), which crypt_rn checks
_CRYPT_DATA_SIZE = 64 * 1024


def _crypt_without_gil() -> Callable[[bytes, bytes], bytes | None] | None:
    """libxcrypt's crypt_rn via ctypes, which releases the GIL while it runs (the crypt_r module
    holds it for the ~1.5 ms of a hash, stalling every other thread).

    The library is found through the crypt_r extension module, which links it: dlsym on that
    module also searches its dependencies, so no library path is guessed.
    """
    import _crypt_r  # the C part of crypt_r

    try:
        crypt_rn = ctypes.CDLL(_crypt_r.__file__).crypt_rn
    except (OSError, AttributeError):
        return None
    crypt_rn.restype = ctypes.c_char_p
    crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]

    def crypt(phrase: bytes, setting: bytes) -> bytes | None:
        data = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)
        return crypt_rn(phrase, setting, data, _CRYPT_DATA_SIZE)

    return crypt


_crypt_rn = _crypt_without_gil()


def sha512_crypt(password: str, setting: str) -> str:
    """crypt(3) of ``password`` with ``setting`` ("$6$<salt>" or a whole hash); raises ValueError."""
    if "\x00" in password:
        raise ValueError("password contains NUL")
    if _crypt_rn is not None:
        result = _crypt_rn(password.encode(), setting.encode())
        hashed = result.decode() if result else None
    else:
        hashed = crypt_r.crypt(password, setting)
    if not hashed or not hashed.startswith("$6$"):
        raise ValueError("crypt failed")
    return hashed


def hash_password(password: str) -> str:
    """A new ``{SHA512-CRYPT}`` hash of ``password`` with a random 16-character salt."""
    salt = "".join(secrets.choice(_SALT_ALPHABET) for _ in range(16))
    return SCHEME_PREFIX + sha512_crypt(password, "$6$" + salt)


def verify_password(password: str, stored: str) -> bool:
    """What Dovecot does with the hash doveauth returns (used by tests and tools)."""
    if not stored.startswith(SCHEME_PREFIX):
        return False
    hashed = stored[len(SCHEME_PREFIX) :]
    try:
        return secrets.compare_digest(sha512_crypt(password, hashed), hashed)
    except ValueError:
        return False
