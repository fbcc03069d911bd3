"""System limits for new accounts: the pure rule, reading the machine, doveauth's refusal."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import chatmaild.doveauth
from chatmaild.dictproto import passdb_key, request_line
from chatmaild.doveauth import AuthService
from chatmaild.syslimits import Resources, limit_refusal, parse_mem_available, read_resources

MB = 1024 * 1024
ROOMY = Resources(load_1m=0.5, available_memory=4096 * MB, free_disk_space=100 * 1024 * MB)


@pytest.fixture
def config(make_config):
    return make_config(max_load_1m=5)  # upstream's defaults otherwise: 200M memory, 1G disk


def test_within_the_limits_nothing_is_refused(config) -> None:
    assert limit_refusal(config, ROOMY) is None
    # exactly at a limit is still within it
    assert limit_refusal(config, Resources(5.0, 200 * MB, 1024 * MB)) is None


@pytest.mark.parametrize(
    ("resources", "reason"),
    [
        (Resources(5.01, 4096 * MB, 100 * 1024 * MB), "load avg 5.01 > 5.00"),
        (Resources(0.5, 199 * MB, 100 * 1024 * MB), "available memory 199MB < 200MB"),
        (Resources(0.5, 4096 * MB, 1023 * MB), "free disk 1023MB < 1024MB"),
    ],
)
def test_each_limit_refuses(config, resources: Resources, reason: str) -> None:
    assert limit_refusal(config, resources) == reason


def test_unreadable_values_do_not_refuse(config) -> None:
    assert limit_refusal(config, Resources(None, None, None)) is None


def test_limits_come_from_the_ini(make_config) -> None:
    config = make_config(max_load_1m=0.5, min_available_memory="8G", min_free_disk_space="2T")
    assert limit_refusal(config, ROOMY) == "available memory 4096MB < 8192MB"  # load 0.5: at the limit
    assert limit_refusal(config, Resources(None, 4096 * MB, None)) == "available memory 4096MB < 8192MB"
    assert limit_refusal(config, Resources(None, None, 1024 * 1024 * MB)) == "free disk 1048576MB < 2097152MB"


def test_mem_available_from_proc_meminfo() -> None:
    meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   20480000 kB\n"
    assert parse_mem_available(meminfo) == 20480000 * 1024
    assert parse_mem_available("MemTotal: 1 kB\n") is None


def test_reading_this_machine(tmp_path: Path) -> None:
    resources = read_resources(tmp_path)
    assert resources.load_1m is not None and resources.load_1m >= 0
    assert resources.available_memory is not None and resources.available_memory > 0
    assert resources.free_disk_space is not None and resources.free_disk_space > 0
    # a mailboxes_dir that does not exist yet: that figure is left out
    assert read_resources(tmp_path / "missing").free_disk_space is None


def test_doveauth_creates_no_account_at_the_limit_but_existing_ones_log_in(
    make_config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config()
    existing, new = "abcdefghi@chat.example.org", "newaccoun@chat.example.org"

    def lookup(service: AuthService, addr: str) -> bytes:
        async def answer():
            reply = service.handle_request(request_line("L", passdb_key(addr, "secret1234"), addr)[:-1], {})
            return await reply if asyncio.iscoroutine(reply) else reply

        return asyncio.run(answer())

    with ThreadPoolExecutor(2) as executor:
        service = AuthService(config, executor)
        assert lookup(service, existing).startswith(b"O")  # created while there is room
        monkeypatch.setattr(chatmaild.doveauth, "read_resources", lambda path: Resources(None, None, 0))
        with caplog.at_level(logging.WARNING):
            assert lookup(service, new) == b"N\n"
        assert "registration rejected: free disk 0MB < 1024MB" in caplog.text
        assert not (config.mailboxes_dir / new).exists()
        assert lookup(service, existing).startswith(b"O")
