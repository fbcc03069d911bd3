"""Every unit that modules/render-systemd.nix renders, run by a real systemd: the unit files
(render.nix's systemdUnits text, every hardening directive as rendered) installed in a Debian 12
container booted with systemd-nspawn, with the real chatmaild from the venv, each daemon spoken to
as its real peer speaks to it (tests/systemd/unit_probe.py) and the expiry job run.

Needs root, systemd-nspawn and the cached root of scripts/nspawn-root (scripts/setup installs and
builds both). The container has a network of its own (loopback only); nothing outlives the module.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatmaild.turn import DEFAULT_LIFETIME, rest_credentials
from nix_tools import REPO, render
from nspawn import Container

DOMAIN = "chat.test"
UNITS = ["doveauth", "filtermail", "filtermail-incoming", "chatmail-metadata", "chatmail-newemail",
         "chatmail-turn-credentials", "chatmail-metrics", "chatmail-mxdeliv",
         "chatmail-mxdeliv-outgoing", "chatmail-expire"]
DAEMONS = UNITS[:-1]
PUSH_PORT = 9910
TURN_SECRET = "turn-secret-of-the-test-0123456789"
STAGE = "/srv/chatmail-test"  # where the container sees the staged files
VENV = Path(sys.prefix)  # the venv running this test: Debian's python, chatmaild installed
ROOT_TIMEOUT = 900  # building the cached root (once)
PROBE_TIMEOUT = 120
NEWEMAIL_PORT = 3691  # render-discovery.nix's default


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    return render({
        "domain": DOMAIN,
        "paths": {"binDir": str(VENV / "bin")},
        "pushNotificationUrl": f"http://127.0.0.1:{PUSH_PORT}/notify",
        "metrics": {"enable": True},  # as the module has it by default: reads the journal
        # the test machine's load is no relay's: doveauth refuses new accounts above 5
        "settings": {"max_load_1m": 1000},
    }, tmp_path_factory.mktemp("render"))


def stage_files(rendered: dict) -> Path:
    """What the container gets read-only at STAGE. Not under pytest's tmp: /tmp/pytest-of-root
    is 0700, and vmail reads the probe."""
    stage = Path(tempfile.mkdtemp(prefix="chatmail-units-", dir="/var/tmp"))
    (stage / "units").mkdir()
    for name, unit in rendered["systemdUnits"].items():
        (stage / "units" / f"{name}.service").write_text(unit["text"])
    (stage / "chatmail.ini").write_text(rendered["chatmailIni"])
    shutil.copy(Path(__file__).with_name("unit_probe.py"), stage / "unit_probe.py")
    for path in [stage, *stage.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return stage


def install_and_start(container: Container, rendered: dict) -> None:
    paths = rendered["paths"]
    container.run("sh", "-euc", f"""
        groupadd --system {paths['vmailGroup']}
        groupadd --system {paths['postfixGroup']}
        useradd --system --gid {paths['vmailGroup']} --home-dir /var/lib/vmail \\
            --shell /usr/sbin/nologin {paths['vmailUser']}
        # as modules/chatmaild.nix's tmpfiles rules and environment.etc have them
        install -d -m 0750 -o {paths['vmailUser']} -g {paths['vmailGroup']} /var/lib/vmail
        install -d -m 0750 -o {paths['vmailUser']} -g {paths['postfixGroup']} \\
            {Path(paths['filtermailSocket']).parent}
        install -d -m 0700 -o {paths['vmailUser']} -g {paths['vmailGroup']} {paths['mailboxesDir']}
        install -D -m 0644 {STAGE}/chatmail.ini {paths['configFile']}
        # root's alone: systemd hands it to chatmail-turn-credentials (LoadCredential)
        (umask 077; mkdir -p {Path(turn_secret_file(rendered)).parent}
         echo {TURN_SECRET} > {turn_secret_file(rendered)})
        cp {STAGE}/units/*.service /etc/systemd/system/
        systemctl daemon-reload
        systemctl start {' '.join(f'{name}.service' for name in DAEMONS)}
    """)


def turn_secret_file(rendered: dict) -> str:
    return rendered["realtime"]["paths"]["turnSecretFile"]


@pytest.fixture(scope="module")
def container(rendered: dict, tmp_path_factory) -> Iterator[Container]:
    if os.geteuid() != 0:
        pytest.fail("tests/systemd needs root (systemd-nspawn)")
    for tool in ("systemd-nspawn", "debootstrap", "nsenter"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/setup")
    started = time.monotonic()
    built = subprocess.run([str(REPO / "scripts" / "nspawn-root")], capture_output=True, text=True,
                           timeout=ROOT_TIMEOUT)
    assert built.returncode == 0, built.stderr
    root = Path(built.stdout.strip())
    stage = stage_files(rendered)
    container = Container(root, f"cmunits-{secrets.token_hex(3)}",
                          tmp_path_factory.mktemp("nspawn") / "console.log",
                          bind_ro=[(VENV, str(VENV)), (stage, STAGE)])
    try:
        container.start()
        booted = time.monotonic()
        install_and_start(container, rendered)
        print(f"root ready {booted - started:.1f} s (boot included)")
        yield container
    finally:
        stopping = time.monotonic()
        container.stop()
        print(f"container stopped in {time.monotonic() - stopping:.1f} s")
        shutil.rmtree(stage)


def daemon_endpoints(rendered: dict) -> dict:
    """Where each daemon listens: unix socket paths and loopback ports."""
    paths = rendered["paths"]
    return {
        "doveauth_socket": paths["doveauthSocket"],
        "metadata_socket": paths["metadataSocket"],
        "turn_socket": rendered["realtime"]["paths"]["turnSocket"],
        "filtermail_socket": paths["filtermailSocket"],
        "filtermail_incoming_socket": paths["filtermailIncomingSocket"],
        "newemail_port": rendered["discovery"]["ports"]["newemail"],
        "metrics_port": rendered["metrics"]["port"],
        "mxdeliv_port": rendered["settings"]["filtermail_http_port_incoming"],
        "mxdeliv_outgoing_port": rendered["settings"]["mxdeliv_fallback_port"],
    }


@pytest.fixture(scope="module")
def probe(container: Container, rendered: dict) -> dict:
    paths = rendered["paths"]
    wait_listening(container, daemon_endpoints(rendered))
    given = {**daemon_endpoints(rendered), "mailboxes_dir": paths["mailboxesDir"], "push_port": PUSH_PORT,
             "postfix_mxdeliv_port": rendered["settings"]["postfix_mxdeliv_port"]}
    result = container.run(
        "setpriv", f"--reuid={paths['vmailUser']}", f"--regid={paths['vmailGroup']}", "--init-groups",
        str(VENV / "bin" / "python"), f"{STAGE}/unit_probe.py", json.dumps(given),
        check=False, timeout=PROBE_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr + journal(container)
    return json.loads(result.stdout.splitlines()[-1])


def wait_listening(container: Container, endpoints: dict) -> None:
    """Until every daemon's socket or port accepts connections (bounded)."""
    script = f"""
import socket, sys, time
deadline = time.monotonic() + 60
for target in {sorted(endpoints.values(), key=str)!r}:
    while True:
        family = socket.AF_UNIX if isinstance(target, str) else socket.AF_INET
        with socket.socket(family) as s:
            if s.connect_ex(target if isinstance(target, str) else ("127.0.0.1", target)) == 0:
                break
        if time.monotonic() > deadline:
            sys.exit(f"{{target}} does not accept connections")
        time.sleep(0.1)
"""
    result = container.run(str(VENV / "bin" / "python"), "-c", script, check=False, timeout=90)
    assert result.returncode == 0, result.stderr + journal(container)


def journal(container: Container) -> str:
    units = [arg for name in UNITS for arg in ("-u", f"{name}.service")]
    return container.run("journalctl", "--no-pager", "-o", "cat", "-n", "200", *units,
                         check=False).stdout


def show(container: Container, unit: str, *properties: str) -> dict[str, str]:
    output = container.run("systemctl", "show", f"{unit}.service",
                           *(f"--property={p}" for p in properties)).stdout
    return dict(line.split("=", 1) for line in output.splitlines())


def test_every_rendered_unit_is_installed_as_rendered(container: Container, rendered: dict) -> None:
    assert sorted(rendered["systemdUnits"]) == sorted(UNITS)
    for name in UNITS:
        installed = container.run("cat", f"/etc/systemd/system/{name}.service").stdout
        assert installed == rendered["systemdUnits"][name]["text"], name
        # systemd understood every line: nothing ignored as unknown or invalid
        verify = container.run("systemd-analyze", "verify", f"{name}.service", check=False)
        assert "Unknown" not in verify.stderr and "Invalid" not in verify.stderr, verify.stderr


def test_each_daemon_serves(probe: dict) -> None:
    account = probe["newemail"]
    # chatmail-newemail (dynamic user, loopback only): fresh credentials over HTTP
    assert account["status"] == 200 and account["email"].endswith(f"@{DOMAIN}")
    # doveauth (no network, maildirs only): the first login creates the account, the next
    # gets the same hash
    doveauth = probe["doveauth"]
    assert doveauth["created"]["password"].startswith("{SHA512-CRYPT}$6$")
    assert doveauth["same_hash_again"] and doveauth["userdb"]["home"] == probe["mailbox"]
    # chatmail-metadata: a push token stored in the maildir, then POSTed on "messagenew"
    metadata = probe["metadata"]
    assert (metadata["set"], metadata["lookup"], metadata["messagenew"]) == ("O1\n", "Oprobe-token-1\n", "O2\n")
    assert metadata["pushed"] == ["probe-token-1"]
    # chatmail-turn-credentials (no network, the secret as a systemd credential): REST-API
    # credentials from the secret, also through chatmail-metadata's TURN key
    username, password = probe["turn"].strip().split(":")
    assert (username, password) == rest_credentials(TURN_SECRET, int(username) - DEFAULT_LIFETIME)
    assert metadata["turn"].startswith(f"O{DOMAIN}:3478:") and metadata["turn"].endswith("\n")
    # filtermail's milters (outgoing: no network at all): encrypted mail accepted, cleartext
    # refused; the incoming one reads the recipient's maildir (enforceE2EEincoming, made with the
    # account) to refuse cleartext, and wants a DKIM signature of the From domain
    assert probe["filtermail"]["replies"] == [250, 523], probe["filtermail"]
    assert probe["filtermail_incoming"]["texts"] == [
        "554 5.7.1 No DKIM signature found", "523 Encryption Needed: Invalid Unencrypted Mail"], probe


def test_mxdeliv_serves_both_ways(probe: dict) -> None:
    # incoming (loopback only): a POST becomes one SMTP transaction with Postfix's port
    incoming = probe["mxdeliv"]
    assert (incoming["status"], incoming["reply"]) == (200, "250 OK"), incoming
    (handed_in,) = incoming["handed_in"]
    assert handed_in["to"] == [probe["newemail"]["email"]] and handed_in["bytes"] == incoming["bytes"]
    # outgoing (any network): it read resolv.conf, connected to port 443 and was refused there,
    # not stopped by its confinement (which would say "Operation not permitted")
    outgoing = probe["mxdeliv_outgoing"]
    assert outgoing["code"] == 451 and "Connection refused" in outgoing["reply"], outgoing


def test_expire_job_runs_and_removes_old_mail(container: Container, probe: dict) -> None:
    container.run("systemctl", "start", "chatmail-expire.service", timeout=120)
    state = show(container, "chatmail-expire", "Result", "ExecMainStatus")
    assert state == {"Result": "success", "ExecMainStatus": "0"}, journal(container)
    present = container.run("sh", "-c", f"ls {probe['mailbox']}/cur").stdout.split()
    assert present == [Path(probe["expire"]["fresh"]).name], present
    assert "Removed 0 out of 1 mailboxes and 1 out of 2 files" in journal(container)


def test_daemons_stayed_up_confined(container: Container, probe: dict, rendered: dict) -> None:
    """After serving: still the first process of each (no crash and restart), and the
    confinement is in force on it, as the kernel shows it."""
    init_net = container.run("readlink", "/proc/1/ns/net").stdout
    for name in DAEMONS:
        state = show(container, name, "ActiveState", "NRestarts", "MainPID")
        assert (state["ActiveState"], state["NRestarts"]) == ("active", "0"), (name, journal(container))
        pid = state["MainPID"]
        status = dict(line.split(":\t", 1) for line in
                      container.run("cat", f"/proc/{pid}/status").stdout.splitlines() if ":\t" in line)
        assert status["NoNewPrivs"].strip() == "1", name
        assert status["Seccomp"].strip() == "2", name  # SystemCallFilter and friends
        assert int(status["CapEff"], 16) == 0, name
        # PrivateUsers: a user namespace of its own, mapping root and the service's user only
        # (not chatmail-metrics: the journal's group must stay mapped)
        uid_map = container.run("cat", f"/proc/{pid}/uid_map").stdout.split()
        private_users = rendered["systemdUnits"][name]["serviceConfig"]["PrivateUsers"]
        assert (uid_map != ["0", "0", "4294967295"] and len(uid_map) <= 6) == private_users, (name, uid_map)
        private_network = rendered["systemdUnits"][name]["serviceConfig"].get("PrivateNetwork", False)
        net = container.run("readlink", f"/proc/{pid}/ns/net").stdout
        assert (net != init_net) == private_network, name
        # ProtectSystem=strict: the root file system is read-only in the daemon's mount namespace
        mounts = [line.split() for line in
                  container.run("cat", f"/proc/{pid}/mountinfo").stdout.splitlines()]
        assert [m[5].split(",")[0] for m in mounts if m[4] == "/"][-1] == "ro", (name, mounts)


def test_metrics_count_what_the_daemons_wrote_to_the_journal(container: Container, probe: dict,
                                                             rendered: dict) -> None:
    """chatmail-metrics (a dynamic user in systemd-journal) read the journal while the probe ran:
    doveauth's new account, filtermail's accepted and refused mail."""
    url = f"http://127.0.0.1:{rendered['metrics']['port']}/metrics"
    script = ("import sys, time, urllib.request\n"
              "deadline = time.monotonic() + 30\n"
              "while True:\n"
              "    text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()\n"
              "    values = dict(l.rsplit(' ', 1) for l in text.splitlines() if l and l[0] != '#')\n"
              "    if float(values['rejected_unencrypted_mail_count']) >= 2 or time.monotonic() > deadline:\n"
              "        break\n"
              "    time.sleep(0.5)\n"
              "print(' '.join(f'{k}={v}' for k, v in values.items()))\n")
    output = container.run(str(VENV / "bin" / "python"), "-c", script, url, timeout=60).stdout
    values = dict(pair.split("=", 1) for pair in output.split())
    for counter, least in {"created_accounts": 1, "outgoing_encrypted_mail_count": 1,
                           "incoming_encrypted_mail_count": 1, "rejected_unencrypted_mail_count": 2}.items():
        assert float(values[counter]) >= least, (counter, values, journal(container))
    assert values["dovecot_stats_up"] == "0"  # no Dovecot in the container: said, not hidden


def test_the_confinement_mechanisms_work_in_this_container(container: Container) -> None:
    """The directives the units rely on are enforced here, not ignored (a systemd on cgroup v1,
    or without bpf(), drops the IP filters silently): the same directives on a probe."""
    script = (
        "import mmap, socket\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    print('wx-allowed')\n"
        "except PermissionError:\n"
        "    print('wx-denied')\n"
        "with socket.socket() as s:\n"
        "    s.settimeout(3)\n"
        "    try:\n"
        f"        s.connect(('127.0.0.1', {NEWEMAIL_PORT}))\n"  # chatmail-newemail listens there
        "        print('connected')\n"
        "    except OSError as e:\n"
        "        print('refused' if isinstance(e, ConnectionRefusedError) else 'blocked')\n"
    )

    def probe(*properties: str) -> list[str]:
        return container.run(
            "systemd-run", "--wait", "--pipe", "--quiet", *(f"--property={p}" for p in properties),
            str(VENV / "bin" / "python"), "-c", script, timeout=60).stdout.split()

    assert probe() == ["wx-allowed", "connected"]
    assert probe("MemoryDenyWriteExecute=yes", "IPAddressDeny=any") == ["wx-denied", "blocked"]
    assert probe("IPAddressDeny=any", "IPAddressAllow=localhost") == ["wx-allowed", "connected"]
