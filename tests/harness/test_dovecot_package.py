"""The harness runs the Dovecot the NixOS module runs by default: Debian's package built with
pkgs/dovecot/no-notify-delay.patch (scripts/setup), not the stock one with its 500 ms IDLE
notification delay. The build is recognised by its version, which names the patch's hash; that
it notifies sooner is measured by scripts/bench (idle_notification_p50_ms), not asserted here."""

from __future__ import annotations

import subprocess

from harness_lib import installed_dovecot_version, patched_dovecot_suffix

HARNESS_PACKAGES = ("dovecot-core", "dovecot-imapd", "dovecot-lmtpd")


def test_installed_dovecot_is_the_patched_build() -> None:
    suffix = patched_dovecot_suffix()
    for package in HARNESS_PACKAGES:
        version = installed_dovecot_version(package)
        assert version.endswith(suffix), (
            f"{package} {version or '(not installed)'} is not the build of "
            f"pkgs/dovecot/no-notify-delay.patch (version ending in {suffix}): run scripts/setup")


def test_patched_dovecot_is_held() -> None:
    # apt-get upgrade would otherwise put the stock packages back
    held = subprocess.run(["apt-mark", "showhold"], capture_output=True, text=True, check=True,
                          timeout=30).stdout.split()
    assert set(HARNESS_PACKAGES) <= set(held), f"held: {held}"
