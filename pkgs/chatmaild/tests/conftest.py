"""Shared fixtures: a chatmail.ini in a temp dir and the Config read from it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from chatmaild.config import Config, read_config
from chatmaild.dnszone import dkim_public_key, dkim_txt_value

MAIL_DOMAIN = "chat.example.org"


@pytest.fixture
def make_ini(tmp_path: Path) -> Callable[..., Path]:
    """Write ``chatmail.ini`` with the given ``[params]`` (mailboxes_dir under tmp_path by default)."""

    def make(mail_domain: str = MAIL_DOMAIN, **params: object) -> Path:
        params.setdefault("mailboxes_dir", tmp_path / "mail" / mail_domain)
        # the test machine's load is no relay's: doveauth would refuse new accounts above 5
        params.setdefault("max_load_1m", 1000)
        lines = ["[params]", f"mail_domain = {mail_domain}"]
        lines += [f"{key} = {value}" for key, value in params.items()]
        inipath = tmp_path / "chatmail.ini"
        inipath.write_text("\n".join(lines) + "\n")
        return inipath

    return make


@pytest.fixture
def make_config(make_ini: Callable[..., Path]) -> Callable[..., Config]:
    def make(mail_domain: str = MAIL_DOMAIN, **params: object) -> Config:
        return read_config(make_ini(mail_domain, **params))

    return make


@pytest.fixture
def example_config(make_config: Callable[..., Config]) -> Config:
    return make_config()


# DKIM keys of two domains (a.test, b.test) for the DKIM verification tests


@pytest.fixture(scope="session")
def private_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("dkim-keys")
    keys = {}
    for domain in ("a.test", "b.test"):
        path = directory / f"{domain}.pem"
        subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(path), "2048"], check=True,
                       capture_output=True)
        keys[domain] = path.read_bytes()
    return keys


@pytest.fixture(scope="session")
def keys(private_keys: dict[str, bytes]) -> dict[str, bytes]:
    """The published key records: opendkim._domainkey.<domain>. -> TXT data."""
    return {f"opendkim._domainkey.{domain}.": dkim_txt_value(dkim_public_key(pem.decode())).encode()
            for domain, pem in private_keys.items()}
