"""doveauth behind a real Dovecot 2.3: proves the dict protocol against Dovecot's own client.

Dovecot runs as a private instance (own base_dir, state_dir, instance_name, log) with IMAP on a
loopback high port; every process and file is removed afterwards.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_doveauth_daemon import Daemon

DOMAIN = "chat.example.org"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        shutil.which("dovecot") is None or os.geteuid() != 0, reason="needs Dovecot 2.3 and root"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What every private instance of these tests has: its own directories, name and log, plaintext
# logins on a loopback IMAP port, no other listener (the test's own part adds protocols, passdb,
# userdb, mail settings).
INSTANCE_CONF = """\
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = dovecot-test-{port}
log_path = {dir}/dovecot.log
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
first_valid_uid = 1
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
"""

DOVECOT_CONF = """\
protocols = imap
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
passdb {{
  driver = dict
  args = {dir}/auth.conf
}}
userdb {{
  driver = dict
  args = {dir}/auth.conf
  # the test runs doveauth as root; mail processes must not, so they run as nobody
  override_fields = uid={mail_user} gid={mail_group} home={dir}/home/%u
}}
mail_location = maildir:{dir}/home/%u/Maildir
mail_plugins = last_login
plugin {{
  last_login_dict = proxy:{dir}/doveauth.socket:lastlogin
  last_login_precision = s
}}
# no login penalty after failures: the tests fail logins on purpose
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

# as upstream's /etc/dovecot/auth.conf
AUTH_CONF = """\
uri = proxy:{dir}/doveauth.socket:auth
iterate_disable = no
iterate_prefix = userdb/
default_pass_scheme = plain
password_key = passdb/%Ew"%Eu
user_key = userdb/%Eu
"""


class Dovecot:
    """A private Dovecot instance in WORKDIR: INSTANCE_CONF and CONF, formatted with dir, port
    (IMAP), lmtp_port, mail_user and mail_group (mail processes run as nobody)."""

    def __init__(self, workdir: Path, conf: str = DOVECOT_CONF) -> None:
        self.dir = workdir
        self.port = free_port()
        self.lmtp_port = free_port()
        nobody = pwd.getpwnam("nobody")
        self.mail_uid, self.mail_gid = nobody.pw_uid, nobody.pw_gid
        (workdir / "home").mkdir()
        os.chown(workdir / "home", self.mail_uid, self.mail_gid)
        self.conf = workdir / "dovecot.conf"
        values = {"dir": workdir, "port": self.port, "lmtp_port": self.lmtp_port,
                  "mail_user": self.mail_uid, "mail_group": self.mail_gid}
        self.conf.write_text(INSTANCE_CONF.format(**values) + conf.format(**values))
        (workdir / "auth.conf").write_text(AUTH_CONF.format(dir=workdir))
        subprocess.run(["dovecot", "-c", str(self.conf)], check=True, timeout=20,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pidfile = workdir / "run" / "master.pid"
        deadline = time.monotonic() + 10
        while not self._listening():
            if time.monotonic() > deadline:
                raise RuntimeError("dovecot did not start: " + self.log())
            time.sleep(0.05)

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text() if path.exists() else ""

    def doveadm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["doveadm", "-c", str(self.conf), *args], capture_output=True, text=True, timeout=20)

    def stop(self) -> None:
        pid = int(self.pidfile.read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def relay() -> Iterator[tuple[Daemon, Dovecot]]:
    """One doveauth and one Dovecot for the module (Dovecot takes ~2.5 s to stop); every test
    uses addresses of its own."""
    # a world-traversable directory: Dovecot's unprivileged processes must reach the socket
    workdir = Path(tempfile.mkdtemp(prefix="doveauth-dovecot-"))
    workdir.chmod(0o755)
    inipath = workdir / "chatmail.ini"
    # max_load_1m: the test machine's load is no relay's (doveauth refuses new accounts above 5)
    inipath.write_text(f"[params]\nmail_domain = {DOMAIN}\nmailboxes_dir = {workdir}/mail/{DOMAIN}\n"
                       "max_load_1m = 1000\n")
    daemon = dovecot = None
    try:
        daemon = Daemon(workdir, inipath)
        # in production doveauth runs as the mail user and owns its socket; mimic that ownership
        nobody = pwd.getpwnam("nobody")
        os.chown(daemon.socket_path, nobody.pw_uid, nobody.pw_gid)
        dovecot = Dovecot(workdir)
        yield daemon, dovecot
    finally:
        if dovecot is not None:
            dovecot.stop()
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(workdir)


def test_login_creates_account_and_checks_password(relay):
    daemon, dovecot = relay
    addr = f"creation1@{DOMAIN}"
    created = dovecot.doveadm("auth", "test", addr, "secret1234")
    assert created.returncode == 0 and "auth succeeded" in created.stdout, created.stdout + dovecot.log()
    wrong = dovecot.doveadm("auth", "test", addr, "wrongpassword")
    assert wrong.returncode != 0 and "auth failed" in wrong.stdout
    again = dovecot.doveadm("auth", "test", addr, "secret1234")
    assert again.returncode == 0
    special = "p\"w'\\d/x y"
    other = f"creation2@{DOMAIN}"
    assert dovecot.doveadm("auth", "test", other, special).returncode == 0
    assert dovecot.doveadm("auth", "test", other, special + "x").returncode != 0
    assert f"created account {addr}" in daemon.log() and f"created account {other}" in daemon.log()


def test_refused_creation_fails_login(relay):
    daemon, dovecot = relay
    assert dovecot.doveadm("auth", "test", f"short@{DOMAIN}", "secret1234").returncode != 0
    daemon.nocreate.touch()
    try:
        assert dovecot.doveadm("auth", "test", f"nocreate1@{DOMAIN}", "secret1234").returncode != 0
    finally:
        daemon.nocreate.unlink()
    assert "created account short@" not in daemon.log()
    assert "created account nocreate1@" not in daemon.log()


def test_userdb_and_iteration(relay):
    daemon, dovecot = relay
    addr = f"userdbabc@{DOMAIN}"
    assert dovecot.doveadm("user", addr).returncode != 0  # not yet created
    assert dovecot.doveadm("auth", "test", addr, "secret1234").returncode == 0
    user = dovecot.doveadm("user", addr)
    assert user.returncode == 0 and f"home\t{dovecot.dir}/home/{addr}" in user.stdout
    listed = dovecot.doveadm("user", "*")
    assert sorted(listed.stdout.split()) == sorted(daemon_accounts(daemon)), listed.stderr
    assert addr in listed.stdout.split()


def daemon_accounts(daemon: Daemon) -> list[str]:
    return [p.name for p in (daemon.socket_path.parent / "mail" / DOMAIN).iterdir()]


def test_imap_login_and_last_login(relay):
    daemon, dovecot = relay
    addr = f"imaplogin@{DOMAIN}"
    with imaplib.IMAP4("127.0.0.1", dovecot.port, timeout=10) as imap:
        imap.login(addr, "secret1234")
        assert imap.select("INBOX")[0] == "OK"
    with imaplib.IMAP4("127.0.0.1", dovecot.port, timeout=10) as imap:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(addr, "wrongpassword")
    password_file = daemon.socket_path.parent / "mail" / DOMAIN / addr / "password"
    today = int(time.time()) // 86400 * 86400
    deadline = time.monotonic() + 5
    while int(password_file.stat().st_mtime) != today and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(password_file.stat().st_mtime) == today, dovecot.log()
