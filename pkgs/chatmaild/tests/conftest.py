"""Shared fixtures: a chatmail.ini in a temp dir and the Config read from it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from chatmaild.config import Config, read_config

MAIL_DOMAIN = "chat.example.org"


@pytest.fixture
def make_ini(tmp_path: Path) -> Callable[..., Path]:
    """Write ``chatmail.ini`` with the given ``[params]`` (mailboxes_dir under tmp_path by default)."""

    def make(mail_domain: str = MAIL_DOMAIN, **params: object) -> Path:
        params.setdefault("mailboxes_dir", tmp_path / "mail" / mail_domain)
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
