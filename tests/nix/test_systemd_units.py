"""The systemd units of the chatmaild daemons, chatmail-newemail and the expire job, rendered by
render.nix (the module uses the same serviceConfig), measured with Debian's `systemd-analyze security --offline=true`: every unit at
an exposure of 2.0 or less. doveauth's socket is for the vmail user and group only;
chatmail-newemail runs as a dynamic user, loopback only."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nix_tools import render

MAX_EXPOSURE = 2.0
UNITS = {"doveauth", "filtermail", "filtermail-incoming", "chatmail-metadata", "chatmail-newemail",
         "chatmail-expire", "chatmail-turn-credentials", "chatmail-metrics", "chatmail-mxdeliv",
         "chatmail-mxdeliv-outgoing"}


@pytest.fixture(scope="module")
def units(tmp_path_factory) -> dict:
    # metrics as the module enables them by default
    return render({"domain": "chat.example.org", "metrics": {"enable": True}},
                  tmp_path_factory.mktemp("units"))["systemdUnits"]


def exposure(unit_file: Path) -> float:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit_file)],
                            capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (Debian's systemd)")
def test_every_unit_has_low_exposure(units: dict, tmp_path: Path) -> None:
    assert set(units) == UNITS
    figures = {}
    for name in sorted(units):
        unit_file = tmp_path / f"{name}.service"
        unit_file.write_text(units[name]["text"])
        figures[name] = exposure(unit_file)
    print("systemd-analyze security --offline exposure: " + ", ".join(f"{n} {e:.1f}" for n, e in figures.items()))
    assert all(value <= MAX_EXPOSURE for value in figures.values()), figures


def test_unit_text_is_the_service_config(units: dict) -> None:
    """The text holds every serviceConfig value (lists as repeated lines, bools yes/no)."""
    for name in units:
        lines = set(units[name]["text"].splitlines())
        for key, value in units[name]["serviceConfig"].items():
            for item in value if isinstance(value, list) else [value]:
                text = ("yes" if item else "no") if isinstance(item, bool) else str(item)
                assert f"{key}={text}" in lines, (name, key, item)


def test_doveauth_socket_only_for_vmail(units: dict) -> None:
    config = units["doveauth"]["serviceConfig"]
    assert (config["User"], config["Group"]) == ("vmail", "vmail")
    assert config["RuntimeDirectory"] == "doveauth" and config["RuntimeDirectoryMode"] == "0750"
    assert config["RestrictAddressFamilies"] == ["AF_UNIX"] and config["PrivateNetwork"] is True


def test_mxdeliv_receives_on_loopback_and_sends_anywhere(units: dict) -> None:
    incoming = units["chatmail-mxdeliv"]["serviceConfig"]
    assert (incoming["IPAddressDeny"], incoming["IPAddressAllow"]) == ("any", "localhost")
    outgoing = units["chatmail-mxdeliv-outgoing"]["serviceConfig"]
    assert "IPAddressDeny" not in outgoing  # DNS and HTTPS to any relay
    assert outgoing["RestrictAddressFamilies"] == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert "ReadWritePaths" not in incoming and "ReadWritePaths" not in outgoing


def test_newemail_is_a_dynamic_user_on_loopback(units: dict) -> None:
    config = units["chatmail-newemail"]["serviceConfig"]
    # a static User= would win over DynamicUser
    assert config["DynamicUser"] is True and "User" not in config and "Group" not in config
    assert config["ExecStart"] == "chatmail-newemail /etc/chatmail/chatmail.ini --listen 127.0.0.1:3691"
    assert (config["Restart"], config["ProtectHome"]) == ("always", True)
    assert (config["IPAddressDeny"], config["IPAddressAllow"]) == ("any", "localhost")


def test_turn_credentials_reads_the_secret_as_a_systemd_credential(units: dict) -> None:
    config = units["chatmail-turn-credentials"]["serviceConfig"]
    assert config["LoadCredential"] == ["turn-secret:/var/lib/chatmail-turn/static-auth-secret"]
    assert "--secret-file %d/turn-secret" in config["ExecStart"]
    assert config["RuntimeDirectory"] == "chatmail-turn" and config["PrivateNetwork"] is True
