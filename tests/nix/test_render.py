"""modules/render.nix: evaluated with plain nix-instantiate, checked as data and with the real
Postfix 3.7 / Dovecot 2.3 tools of Debian (postconf, postfix check, postmap, doveconf)."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from chatmaild.config import read_config
from chatmaild.metadata import MAX_SMTP_RECIPIENTS, MESSAGENEW_KEY
from chatmaild.notifier import DEFAULT_NOTIFY_URL
from nix_tools import NixError, render

DOMAIN = "_r1.test"
TOOL_TIMEOUT = 60

# One value per setting, each different from its default.
CHANGED_SETTINGS: dict[str, Any] = {
    "max_user_send_per_minute": 30,
    "max_user_send_burst_size": 5,
    "max_mailbox_size": "2G",
    "max_message_size": 1000000,
    "delete_mails_after": 3,
    "delete_large_after": 2,
    "delete_inactive_users_after": 10,
    "username_min_length": 6,
    "username_max_length": 12,
    "password_min_length": 12,
    "filtermail_smtp_port": 20080,
    "postfix_reinject_port": 20025,
    "filtermail_smtp_port_incoming": 20081,
    "postfix_reinject_port_incoming": 20026,
    "filtermail_http_port_incoming": 20082,
    "postfix_mxdeliv_port": 20027,
    "mxdeliv_fallback_port": 20084,
    "disable_ipv6": True,
    "acme_email": "ops@x.test",
    "imap_rawlog": True,
    "imap_compress": True,
    "privacy_postal": "Example GmbH\nSome Street 1",
    "privacy_mail": "privacy@x.test",
    "privacy_pdo": "Data Officer",
    "privacy_supervisor": "Supervisor",
    "max_load_1m": 2.5,
    "min_available_memory": "1G",
    "min_free_disk_space": "10G",
    "max_imap_connections": 300,
    "max_smtp_connections": 50,
}


def master_args(result: dict[str, Any], service: str) -> dict[str, str]:
    """The -o name=value pairs of a master.cf service."""
    args = result["postfixMaster"][service].get("args", [])
    pairs = [args[i + 1] for i, a in enumerate(args) if a == "-o"]
    return dict(pair.split("=", 1) for pair in pairs)


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={DOMAIN}",
         "-addext", f"subjectAltName=DNS:{DOMAIN}"],
        check=True, capture_output=True, timeout=TOOL_TIMEOUT,
    )
    return {"tlsCert": str(cert), "tlsKey": str(key)}


def local_params(tmp_path: Path, tls: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Params with every path inside tmp_path, as the local harness would pass them."""
    params: dict[str, Any] = {
        "domain": DOMAIN,
        "paths": {
            **tls,
            "configFile": str(tmp_path / "chatmail.ini"),
            "mailboxesDir": str(tmp_path / "mail"),
            "doveauthSocket": str(tmp_path / "doveauth.socket"),
            "dovecotAuthDictConf": str(tmp_path / "auth-dict.conf"),
            "postfixQueueDir": str(tmp_path / "queue"),
        },
        "postfixMain": {"data_directory": str(tmp_path / "data")},
        "dovecot": {
            "base_dir": str(tmp_path / "dovecot-run"),
            "state_dir": str(tmp_path / "dovecot-state"),
            "instance_name": "render-test",
            "log_path": str(tmp_path / "dovecot.log"),
        },
    }
    for key, value in extra.items():
        params[key] = {**params.get(key, {}), **value} if isinstance(value, dict) else value
    return params


# --- Postfix with the real tools ----------------------------------------------------------------


def postfix_diagnostics(result: dict[str, Any], tmp_path: Path) -> list[str]:
    """Write main.cf/master.cf, run postconf and `postfix check`; return warning/error lines."""
    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text(result["mainCf"])
    (conf / "master.cf").write_text(result["masterCf"])
    for key in ("queue_directory", "data_directory"):
        Path(result["postfixMain"][key]).mkdir(parents=True, exist_ok=True)
    out = []
    for cmd in (["postconf", "-c", str(conf), "-n"], ["postconf", "-c", str(conf), "-M"],
                ["postfix", "-c", str(conf), "check"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
        out += [f"{cmd[0]} rc={proc.returncode}"] if proc.returncode else []
        out += [line for line in proc.stderr.splitlines()
                if any(word in line for word in ("warning", "fatal", "error"))]
    return out


def postconf_expanded(conf: Path, name: str) -> str:
    return subprocess.run(["postconf", "-c", str(conf), "-xh", name], check=True,
                          capture_output=True, text=True, timeout=TOOL_TIMEOUT).stdout.strip()


def postmap_query(conf: Path, key: str, table: str) -> str:
    proc = subprocess.run(["postmap", "-c", str(conf), "-q", key, table],
                          capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    return proc.stdout.strip()


@pytest.mark.parametrize("settings", [{}, CHANGED_SETTINGS], ids=["defaults", "changed"])
def test_postfix_accepts_rendered_config(tmp_path, tls_files, settings):
    result = render(local_params(tmp_path, tls_files, settings=settings), tmp_path)
    assert postfix_diagnostics(result, tmp_path) == []


def test_postfix_check_catches_unknown_parameter(tmp_path, tls_files):
    # The check above can fail: an unknown main.cf parameter is reported.
    params = local_params(tmp_path, tls_files, postfixMain={"smtpd_no_such_thing": "1"})
    diagnostics = postfix_diagnostics(render(params, tmp_path), tmp_path)
    assert any("smtpd_no_such_thing" in line for line in diagnostics)


def test_master_commands_exist_in_postfix(tmp_path, tls_files):
    result = render(local_params(tmp_path, tls_files), tmp_path)
    daemon_dir = Path(subprocess.run(["postconf", "-dh", "daemon_directory"], check=True,
                                     capture_output=True, text=True).stdout.strip())
    for key, entry in result["postfixMaster"].items():
        command = entry.get("command", key)
        assert (daemon_dir / command).exists(), f"{key}: no Postfix daemon {command}"


def test_login_map_and_header_checks_work_in_postfix(tmp_path, tls_files):
    result = render(local_params(tmp_path, tls_files), tmp_path)
    assert postfix_diagnostics(result, tmp_path) == []
    conf = tmp_path / "postfix"
    login_map = postconf_expanded(conf, "smtpd_sender_login_maps")
    # Each sender address is owned by the login of the same name (reject_sender_login_mismatch).
    assert postmap_query(conf, "abcdefghi@_r1.test", login_map) == "abcdefghi@_r1.test"
    header_checks = postconf_expanded(conf, "mua_header_checks")
    assert postmap_query(conf, "Subject: secret plans", header_checks) == "REPLACE Subject: [...]"
    assert postmap_query(conf, "Received: from 1.2.3.4", header_checks) == "IGNORE"
    assert postmap_query(conf, "From: a@b.test", header_checks) == ""


def test_queue_lifetime_mime_and_recipient_limit_as_upstream_1_12(tmp_path, tls_files):
    result = render(local_params(tmp_path, tls_files), tmp_path)
    assert postfix_diagnostics(result, tmp_path) == []
    conf = tmp_path / "postfix"
    assert postconf_expanded(conf, "maximal_queue_lifetime") == "2d"
    # not above maximal_queue_lifetime: qmgr would cut it down with a warning
    assert postconf_expanded(conf, "bounce_queue_lifetime") == "2d"
    assert postconf_expanded(conf, "disable_mime_input_processing") == "yes"
    # chatmail-metadata tells clients this limit (maxsmtprecipients)
    assert postconf_expanded(conf, "smtpd_recipient_limit") == str(MAX_SMTP_RECIPIENTS)


@pytest.mark.parametrize(("next_hop", "policy"), [
    ("[192.0.2.1]", "encrypt"),           # IP-only relays: self-signed certificates
    ("[IPv6:2001:db8::1]", "encrypt"),
    ("_r1.test", "encrypt"),              # test relays: no CA signs names starting with "_"
    ("_chat.example.org", "encrypt"),
    ("nauta.cu", "may"),                  # no STARTTLS at all
    ("chat.example.org", ""),             # everyone else: smtp_tls_security_level = verify
    ("x_y.test", ""),
    ("sub.nauta.cu", ""),
    ("chat.example.org_", ""),
    ("[192.0.2.1]:2525", ""),
])
def test_smtp_tls_policy_as_upstream(tmp_path, tls_files, next_hop, policy):
    result = render(local_params(tmp_path, tls_files), tmp_path)
    assert postfix_diagnostics(result, tmp_path) == []
    conf = tmp_path / "postfix"
    assert postconf_expanded(conf, "smtp_tls_security_level") == "verify"
    assert postmap_query(conf, next_hop, postconf_expanded(conf, "smtp_tls_policy_maps")) == policy


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a Postfix master, which needs root")
def test_postfix_defers_when_filtermail_is_down(tls_files):
    # A real Postfix (this host's) with the rendered config on loopback ports, no filtermail
    # listening: relay mail on port 25 must get a temporary error, so the sender retries.
    # Postfix's unprivileged processes must reach the queue: a directory they can traverse.
    tmp_path = Path(tempfile.mkdtemp(prefix="chatmail-render-postfix-"))
    tmp_path.chmod(0o755)
    try:
        run_postfix_without_filtermail(tmp_path, tls_files)
    finally:
        shutil.rmtree(tmp_path)


def run_postfix_without_filtermail(tmp_path: Path, tls_files: dict[str, str]) -> None:
    smtp, submission, submissions = free_ports(3)
    milter = tmp_path / "filtermail-incoming.sock"  # nobody listens
    params = local_params(
        tmp_path, tls_files,
        paths={"filtermailIncomingSocket": str(milter)},
        postfixMain={"maillog_file": str(tmp_path / "maillog"),
                     "maillog_file_prefixes": str(tmp_path),
                     "multi_instance_name": f"postfix-render-test-{os.getpid()}",
                     "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4"},
        postfixMaster={"smtp_inet": {"name": f"127.0.0.1:{smtp}"},
                       "submission": {"name": f"127.0.0.1:{submission}"},
                       "submissions": {"name": f"127.0.0.1:{submissions}"}},
    )
    result = render(params, tmp_path)
    assert postfix_diagnostics(result, tmp_path) == []
    os.chown(result["postfixMain"]["data_directory"], pwd.getpwnam("postfix").pw_uid, -1)
    master = subprocess.Popen(
        ["/usr/lib/postfix/sbin/master", "-c", str(tmp_path / "postfix"), "-d"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        wait_for_port(smtp)
        tls = ssl.create_default_context(cafile=tls_files["tlsCert"])
        tls.check_hostname = False  # connected by address; the chain is still verified
        with smtplib.SMTP("127.0.0.1", smtp, local_hostname="client.example.org",
                          timeout=30) as client:
            # milter_default_action = tempfail: every command of the session is deferred
            # (STARTTLS with 454, the others with 451)
            try:
                client.starttls(context=tls)
                code, message = client.mail("sender@elsewhere.example.org")
            except smtplib.SMTPResponseException as error:
                code, message = error.smtp_code, error.smtp_error
        assert code in (451, 454), message
        # postlogd writes the log asynchronously
        expected = f"connect to Milter service unix:{milter}"
        deadline = time.monotonic() + 10
        while expected not in (tmp_path / "maillog").read_text():
            assert time.monotonic() < deadline, (tmp_path / "maillog").read_text()
            time.sleep(0.1)
    finally:
        # master leads its own process group (start_new_session): wait until all of it is gone.
        os.kill(master.pid, signal.SIGTERM)
        master.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(master.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)


# --- Postfix as data ----------------------------------------------------------------------------


def test_postfix_relay_defaults(tmp_path):
    result = render({"domain": DOMAIN}, tmp_path)
    assert result["problems"] == []
    main = result["postfixMain"]
    assert main["myhostname"] == main["myorigin"] == main["virtual_mailbox_domains"] == DOMAIN
    assert main["mydestination"] == ""
    assert main["virtual_transport"] == "lmtp:unix:private/dovecot-lmtp"
    assert main["message_size_limit"] == 31457280
    assert main["smtpd_tls_chain_files"] == ["/var/lib/chatmail-tls/key.pem",
                                             "/var/lib/chatmail-tls/cert.pem"]
    assert main["smtp_tls_security_level"] == "verify"
    assert "reject_sender_login_mismatch" in main["mua_sender_restrictions"]
    assert main["inet_protocols"] == "all"

    smtp = result["postfixMaster"]["smtp_inet"]
    assert (smtp["name"], smtp["type"], smtp["command"]) == ("smtp", "inet", "smtpd")
    assert master_args(result, "smtp_inet") == {
        "smtpd_tls_security_level": "encrypt",
        "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
        "smtpd_milters": "unix:/run/filtermail/incoming.sock",
        "cleanup_service_name": "incomingclean",
    }
    for service, extra in (("submission", "smtpd_tls_auth_only"),
                           ("submissions", "smtpd_tls_wrappermode")):
        args = master_args(result, service)
        assert result["postfixMaster"][service]["type"] == "inet"
        # filtermail checks, then OpenDKIM signs; no proxy filter, no re-injection
        assert args["smtpd_milters"] == "unix:/run/filtermail/outgoing.sock,unix:/run/opendkim/opendkim.sock"
        assert args["cleanup_service_name"] == "authclean"
        assert "smtpd_proxy_filter" not in args
        assert args["smtpd_sasl_type"] == "dovecot"
        assert args["smtpd_sasl_path"] == "private/auth"
        assert args["smtpd_tls_security_level"] == "encrypt"
        assert args["smtpd_sender_restrictions"] == "$mua_sender_restrictions"
        assert args[extra] == "yes"
    # the one loopback smtpd takes mail that arrived over HTTPS (/mxdeliv), once: no re-injection
    assert [name for name, entry in result["postfixMaster"].items()
            if entry.get("name", name).startswith("127.0.0.1:")] == ["mxdeliv"], "a re-injection service"
    assert master_args(result, "authclean") == {"header_checks": "$mua_header_checks"}
    assert master_args(result, "incomingclean") == {
        "header_checks": "$incoming_header_checks", "mime_header_checks": "", "nested_header_checks": ""}
    assert main["milter_default_action"] == "tempfail"


def test_mail_over_https_meets_port_25s_checks(tmp_path, tls_files):
    result = render(local_params(tmp_path, tls_files), tmp_path)
    assert postfix_diagnostics(result, tmp_path) == []
    mxdeliv, port25 = master_args(result, "mxdeliv"), master_args(result, "smtp_inet")
    assert result["postfixMaster"]["mxdeliv"]["name"] == "127.0.0.1:10027"
    # every check of port 25 but TLS (loopback); the client is 127.0.0.1, inside mynetworks,
    # so relaying is refused explicitly
    assert {k: v for k, v in port25.items() if not k.startswith("smtpd_tls_")} == {
        k: v for k, v in mxdeliv.items() if k not in ("syslog_name", "smtpd_relay_restrictions")}
    assert mxdeliv["smtpd_relay_restrictions"] == "reject_unauth_destination"
    assert "127.0.0.0/8" in result["postfixMain"]["mynetworks"]
    # mail that cannot reach a peer's port 25 goes to chatmail-mxdeliv outgoing, in plain SMTP
    conf = tmp_path / "postfix"
    assert postconf_expanded(conf, "smtp_fallback_relay") == "[127.0.0.1]:10084"
    policy = postconf_expanded(conf, "smtp_tls_policy_maps")
    assert postmap_query(conf, "[127.0.0.1]:10084", policy) == "none"
    assert postmap_query(conf, "[127.0.0.1]:25", policy) == ""
    assert result["daemons"]["mxdeliv-outgoing"][-2:] == ["--ca-file", result["paths"]["caFile"]]


@pytest.mark.parametrize("mxdeliv", [{"enable": False}, {"fallback": False}])
def test_mail_over_https_can_be_turned_off(tmp_path, tls_files, mxdeliv):
    result = render(local_params(tmp_path, tls_files, mxdeliv=mxdeliv), tmp_path)
    assert postfix_diagnostics(result, tmp_path) == []
    receiving, sending = mxdeliv.get("enable", True), mxdeliv.get("fallback", True)
    assert ("mxdeliv" in result["postfixMaster"]) == ("mxdeliv" in result["daemons"]) == receiving
    assert ("location /mxdeliv" in result["discovery"]["nginx"]["conf"]) == receiving
    assert ("smtp_fallback_relay" in result["postfixMain"]) == sending
    assert ("mxdeliv-outgoing" in result["daemons"]) == sending
    assert ("none}" in result["postfixMain"]["smtp_tls_policy_maps"]) == sending


def test_relay_to_relay_connections_are_reused(tmp_path):
    # TLS connections to other relays are cached (tlsproxy) for every destination, with
    # Postfix's own time limits written out (docs/instant-delivery.md)
    result = render({"domain": DOMAIN}, tmp_path)
    main = result["postfixMain"]
    assert main["smtp_tls_connection_reuse"] is True
    assert main["smtp_connection_cache_destinations"] == "static:all"
    assert main["smtp_connection_cache_time_limit"] == main["connection_cache_ttl_limit"] == "2s"
    assert main["smtp_connection_reuse_time_limit"] == "300s"
    # new connections: a full handshake, not a resumed session (which stalled them ~40 ms)
    assert "smtp_tls_session_cache_database" not in main
    assert "\ntlsproxy unix - - - - 0 tlsproxy\n" in result["masterCf"]


def test_master_cf_text_matches_entries(tmp_path):
    text = render({"domain": DOMAIN}, tmp_path)["masterCf"]
    assert "\nsmtp inet n - - - - smtpd\n  -o cleanup_service_name=incomingclean\n" in text
    assert "\n  -o smtpd_milters=unix:/run/filtermail/incoming.sock\n" in text
    assert "\ntlsmgr unix - - - 1000? 1 tlsmgr\n" in text
    assert "\nlocal unix - n - - - local\n" in text


def test_every_setting_is_changed_by_the_test(tmp_path):
    defaults = render({"domain": DOMAIN}, tmp_path)["defaults"]
    assert set(defaults) == set(CHANGED_SETTINGS)
    assert all(defaults[k] != v for k, v in CHANGED_SETTINGS.items())


def test_changed_settings_reach_every_config(tmp_path):
    result = render({"domain": DOMAIN, "settings": CHANGED_SETTINGS}, tmp_path)
    assert result["problems"] == []
    assert result["postfixMain"]["message_size_limit"] == 1000000
    assert result["postfixMain"]["inet_protocols"] == "ipv4"
    # the filter ports are upstream's SMTP mode's: in chatmail.ini, not in master.cf
    assert "20081" not in result["masterCf"] and "20080" not in result["masterCf"]

    dovecot = result["dovecot"]
    assert dovecot["plugin"]["quota_rule"] == "*:storage=2097152K"
    # 75 % of 2G triggers the script with a target of 70 %
    assert dovecot["plugin"]["quota_warning"] == (
        f"storage=75%% quota-warning 1468006K /var/lib/vmail/mail/{DOMAIN}/%u")
    assert dovecot["service imap"]["process_limit"] == 300
    for service in ("submission", "submissions"):
        assert result["postfixMaster"][service]["maxproc"] == 50
        assert master_args(result, service)["smtpd_client_connection_count_limit"] == "10"
    assert dovecot["plugin"]["quota_max_mail_size"] == 1000000
    assert dovecot["listen"] == "*"
    assert "imap_zlib" in dovecot["protocol imap"]["mail_plugins"]
    assert "imap_hibernate_timeout" not in dovecot
    assert dovecot["protocol imap"]["rawlog_dir"] == "%h"
    assert dovecot["service imap"]["executable"] == "imap postlogin"
    assert result["ports"]["internal"] == {
        "filtermail_smtp_port": 20080, "postfix_reinject_port": 20025,
        "filtermail_smtp_port_incoming": 20081, "postfix_reinject_port_incoming": 20026,
        "filtermail_http_port_incoming": 20082, "postfix_mxdeliv_port": 20027,
        "mxdeliv_fallback_port": 20084}
    assert result["postfixMaster"]["mxdeliv"]["name"] == "127.0.0.1:20027"
    assert result["postfixMain"]["smtp_fallback_relay"] == "[127.0.0.1]:20084"
    assert "proxy_pass http://127.0.0.1:20082;" in result["discovery"]["nginx"]["conf"]


# --- Dovecot ------------------------------------------------------------------------------------


def doveconf(result: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "dovecot.conf"
    conf.write_text(result["dovecotConf"])
    Path(result["paths"]["dovecotAuthDictConf"]).write_text(result["dovecotAuthDictConf"])
    return subprocess.run(["doveconf", "-c", str(conf), "-n"], capture_output=True, text=True,
                          timeout=TOOL_TIMEOUT)


@pytest.mark.parametrize("settings", [{}, CHANGED_SETTINGS], ids=["defaults", "changed"])
def test_doveconf_accepts_rendered_config(tmp_path, tls_files, settings):
    proc = doveconf(render(local_params(tmp_path, tls_files, settings=settings), tmp_path),
                    tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower() and "error" not in proc.stderr.lower()
    assert f"mail_location = maildir:{tmp_path}/mail/%u" in proc.stdout


def test_doveconf_catches_unknown_setting(tmp_path, tls_files):
    params = local_params(tmp_path, tls_files, dovecot={"no_such_setting": "1"})
    proc = doveconf(render(params, tmp_path), tmp_path)
    assert proc.returncode != 0 and "no_such_setting" in proc.stderr


@pytest.mark.parametrize("settings", [{}, CHANGED_SETTINGS], ids=["defaults", "changed"])
def test_dovecot_plugins_exist_in_debian(tmp_path, settings):
    dovecot = render({"domain": DOMAIN, "settings": settings}, tmp_path)["dovecot"]
    plugins = " ".join([dovecot["mail_plugins"], dovecot["protocol imap"]["mail_plugins"],
                        dovecot["protocol lmtp"]["mail_plugins"]]).split()
    assert {"quota", "imap_quota", "mail_lua", "push_notification_lua"} <= set(plugins)
    for plugin in (p for p in plugins if p != "$mail_plugins"):
        assert glob.glob(f"/usr/lib/dovecot/modules/lib*_{plugin}_plugin.so"), plugin


def test_dovecot_admin_contact_is_the_privacy_mail(tmp_path, tls_files):
    # upstream 1.12: IMAP METADATA /shared/admin is privacy_mail when set; no /shared/comment
    for settings, admin in (({}, None), ({"privacy_mail": "privacy@x.test"}, "mailto:privacy@x.test")):
        dovecot = render({"domain": DOMAIN, "settings": settings}, tmp_path)["dovecot"]
        assert dovecot.get("mail_server_admin") == admin
        assert "mail_server_comment" not in dovecot
    params = local_params(tmp_path, tls_files, settings={"privacy_mail": "privacy@x.test"})
    proc = doveconf(render(params, tmp_path), tmp_path)
    assert "mail_server_admin = mailto:privacy@x.test" in proc.stdout.splitlines()


def test_dovecot_listeners_and_auth(tmp_path):
    result = render({"domain": DOMAIN, "paths": {"postfixQueueDir": "/q",
                                                 "doveauthSocket": "/run/x/auth.sock"}},
                    tmp_path)
    dovecot = result["dovecot"]
    assert dovecot["protocols"] == ["imap", "lmtp"]
    assert dovecot["ssl"] == "required"
    assert dovecot["service lmtp"]["unix_listener /q/private/dovecot-lmtp"]["user"] == "postfix"
    assert dovecot["service auth"]["unix_listener /q/private/auth"]["mode"] == "0660"
    assert dovecot["passdb"] == {"driver": "dict",
                                 "args": "/etc/dovecot/chatmail-auth-dict.conf"}
    assert dovecot["userdb"] == dovecot["passdb"]
    dict_conf = result["dovecotAuthDictConf"].splitlines()
    assert "uri = proxy:/run/x/auth.sock:auth" in dict_conf
    assert 'password_key = passdb/%Ew"%Eu' in dict_conf
    assert "user_key = userdb/%Eu" in dict_conf
    assert "mail_location = maildir:/var/lib/vmail/mail/_r1.test/%u\n" in result["dovecotConf"]
    assert "imap_hibernate_timeout = 30s\n" in result["dovecotConf"]


# --- chatmail.ini and daemons -------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{}, CHANGED_SETTINGS], ids=["defaults", "changed"])
def test_chatmail_ini_is_read_by_chatmaild(tmp_path, settings):
    result = render({"domain": DOMAIN, "settings": settings}, tmp_path)
    ini = tmp_path / "chatmail.ini"
    ini.write_text(result["chatmailIni"])
    config = read_config(ini)
    assert config.mail_domain == DOMAIN
    assert str(config.mailboxes_dir) == f"/var/lib/vmail/mail/{DOMAIN}"
    assert str(config.turn_socket_path) == "/run/chatmail-turn/turn.socket"
    for key, value in result["settings"].items():
        if key in ("mail_domain", "mailboxes_dir", "turn_socket_path"):
            continue
        expected = value.strip() if isinstance(value, str) else value
        assert getattr(config, key) == expected, key


def test_system_limits_default_to_upstream_1_12(tmp_path):
    result = render({"domain": DOMAIN}, tmp_path)
    assert result["dovecot"]["service imap"]["process_limit"] == 10000
    assert result["postfixMaster"]["submission"]["maxproc"] == 1000
    assert master_args(result, "submissions")["smtpd_client_connection_count_limit"] == "200"
    assert {k: result["settings"][k] for k in ("max_load_1m", "min_available_memory", "min_free_disk_space")} \
        == {"max_load_1m": 5, "min_available_memory": "200M", "min_free_disk_space": "1G"}


@pytest.mark.parametrize(("size", "rule", "target"), [
    ("500M", "512000K", "358400K"), ("1000K", "1000K", "700K"), ("500", "512000K", "358400K"),
    ("1gb", "1048576K", "734003K"),
])
def test_quota_rule_and_warning_from_the_mailbox_size(tmp_path, size, rule, target):
    result = render({"domain": DOMAIN, "settings": {"max_mailbox_size": size}}, tmp_path)
    plugin = result["dovecot"]["plugin"]
    assert plugin["quota_rule"] == f"*:storage={rule}"
    assert plugin["quota_warning"].split()[:3] == ["storage=75%%", "quota-warning", target]
    quota_warning = result["dovecot"]["service quota-warning"]
    assert quota_warning["executable"] == "script chatmail-quota-expire"
    assert quota_warning["user"] == "vmail"


def test_fsync_is_off_for_lmtp_and_imap(tmp_path):
    dovecot = render({"domain": DOMAIN}, tmp_path)["dovecot"]
    assert dovecot["protocol lmtp"]["mail_fsync"] == dovecot["protocol imap"]["mail_fsync"] == "never"
    assert "mail_fsync" not in dovecot  # the default (optimized) elsewhere, e.g. for the expiry


@pytest.mark.parametrize(("settings", "problem"), [
    ({"max_mailbox_size": "lots"}, 'settings.max_mailbox_size = "lots" is not a size'),
    ({"min_free_disk_space": "1.5G"}, 'settings.min_free_disk_space = "1.5G" is not a size'),
    ({"max_smtp_connections": 4}, "settings.max_smtp_connections = 4 is too small"),
])
def test_bad_limits_are_problems(tmp_path, settings, problem):
    problems = render({"domain": DOMAIN, "settings": settings}, tmp_path)["problems"]
    assert any(p.startswith(problem) for p in problems), problems


def test_a_message_larger_than_the_free_quarter_is_a_warning(tmp_path):
    assert render({"domain": DOMAIN}, tmp_path)["warnings"] == []
    (warning,) = render({"domain": DOMAIN, "settings": {"max_mailbox_size": "100M"}}, tmp_path)["warnings"]
    assert "max_message_size (31457280 bytes)" in warning and "at least 121M" in warning


def test_metrics(tmp_path):
    off = render({"domain": DOMAIN}, tmp_path)
    assert "metrics" not in off["daemons"] and "chatmail-metrics" not in off["systemdUnits"]
    assert "mtail_address" not in off["settings"] and "service stats" not in off["dovecot"]
    assert "milter_header_checks" not in off["postfixMain"]
    on = render({"domain": DOMAIN, "metrics": {"enable": True, "address": "10.1.2.3", "port": 9999},
                 "paths": {"logFiles": ["postfix=/l/p.log", "dovecot=/l/d.log"]}}, tmp_path)
    assert on["problems"] == []
    assert on["daemons"]["metrics"] == [
        "chatmail-metrics", "/etc/chatmail/chatmail.ini", "--address", "10.1.2.3", "--port", "9999",
        "--dovecot-stats", "http://127.0.0.1:3904/metrics", "--log", "postfix=/l/p.log", "--log", "dovecot=/l/d.log"]
    assert on["settings"]["mtail_address"] == "10.1.2.3"
    assert on["dovecot"]["service stats"]["inet_listener http"] == {"address": "127.0.0.1", "port": 3904}
    assert on["dovecot"]["metric mail_deliveries"] == {"filter": "event=mail_delivery_finished"}
    assert "/^DKIM-Signature:/ INFO" in on["postfixMain"]["milter_header_checks"]
    unit = on["systemdUnits"]["chatmail-metrics"]["serviceConfig"]
    assert unit["SupplementaryGroups"] == ["systemd-journal"] and "IPAddressDeny" not in unit
    loopback = render({"domain": DOMAIN, "metrics": {"enable": True}}, tmp_path)
    assert loopback["daemons"]["metrics"][-1] == "--journal"
    assert loopback["systemdUnits"]["chatmail-metrics"]["serviceConfig"]["IPAddressAllow"] == "localhost"
    clash = render({"domain": DOMAIN, "metrics": {"enable": True, "port": 10080}}, tmp_path)
    assert clash["problems"] == ["metrics port 10080 collides with a mail port; choose another"]
    with pytest.raises(NixError, match="mtail_address"):
        render({"domain": DOMAIN, "settings": {"mtail_address": "127.0.0.1"}}, tmp_path)


def test_daemon_command_lines(tmp_path):
    result = render({"domain": DOMAIN, "paths": {"binDir": "/opt/cm/bin",
                                                 "configFile": "/c/chatmail.ini"}}, tmp_path)
    assert result["daemons"] == {
        "doveauth": ["/opt/cm/bin/doveauth", "/run/doveauth/doveauth.socket", "/c/chatmail.ini"],
        "filtermail": ["/opt/cm/bin/filtermail", "/c/chatmail.ini", "outgoing-milter",
                       "/run/filtermail/outgoing.sock"],
        "filtermail-incoming": ["/opt/cm/bin/filtermail", "/c/chatmail.ini", "incoming-milter",
                                "/run/filtermail/incoming.sock"],
        "metadata": ["/opt/cm/bin/chatmail-metadata", "/run/chatmail-metadata/metadata.socket",
                     "/c/chatmail.ini", "--notify-url", "https://notifications.delta.chat/notify"],
        "turn-credentials": ["/opt/cm/bin/chatmail-turn-credentials", "/run/chatmail-turn/turn.socket",
                             "--secret-file", "/var/lib/chatmail-turn/static-auth-secret",
                             "--lifetime", "432000"],
        "mxdeliv": ["/opt/cm/bin/chatmail-mxdeliv", "/c/chatmail.ini", "incoming"],
        "mxdeliv-outgoing": ["/opt/cm/bin/chatmail-mxdeliv", "/c/chatmail.ini", "outgoing",
                             "--ca-file", "/etc/ssl/certs/ca-certificates.crt"],
    }
    assert result["jobs"] == {
        "expire": ["/opt/cm/bin/chatmail-expire", "/c/chatmail.ini", "--remove"]}
    assert render({"domain": DOMAIN}, tmp_path)["daemons"]["doveauth"][0] == "doveauth"


def test_last_login_goes_to_doveauth(tmp_path):
    # chatmail-expire deletes accounts by their last-login day, which doveauth stores.
    dovecot = render({"domain": DOMAIN, "paths": {"doveauthSocket": "/run/x/auth.sock"}},
                     tmp_path)["dovecot"]
    assert "last_login" in dovecot["protocol imap"]["mail_plugins"].split()
    assert dovecot["plugin"]["last_login_dict"] == "proxy:/run/x/auth.sock:lastlogin"


def test_push_metadata_goes_to_chatmail_metadata(tmp_path):
    params = {"domain": DOMAIN, "pushNotificationUrl": "http://198.18.0.2:9/n",
              "paths": {"metadataSocket": "/run/m/m.sock", "pushNotificationLua": "/etc/p.lua",
                        "configFile": "/c/chatmail.ini"}}
    result = render(params, tmp_path)
    dovecot = result["dovecot"]
    assert dovecot["imap_capability"].split() == ["+XDELTAPUSH", "XCHATMAIL"]
    assert dovecot["mail_attribute_dict"] == "proxy:/run/m/m.sock:metadata"
    assert dovecot["protocol imap"]["imap_metadata"] is True
    assert dovecot["plugin"]["push_notification_driver"] == "lua:file=/etc/p.lua"
    assert result["daemons"]["metadata"] == [
        "chatmail-metadata", "/run/m/m.sock", "/c/chatmail.ini",
        "--notify-url", "http://198.18.0.2:9/n"]
    assert result["appVersionsJson"] is None
    index = {"clients": [{"clientId": "x", "sources": []}]}
    result = render({**params, "appVersions": index, "paths": {"appVersionsFile": "/a.json"}},
                    tmp_path)
    assert result["daemons"]["metadata"][-2:] == ["--appversions", "/a.json"]
    assert json.loads(result["appVersionsJson"]) == index
    # the script sets the key that chatmail-metadata answers with notifications
    lua = result["pushNotificationLua"]
    assert f'metadata_set("/private/{MESSAGENEW_KEY}"' in lua
    for function in ("dovecot_lua_notify_begin_txn", "dovecot_lua_notify_event_message_new",
                     "dovecot_lua_notify_end_txn"):
        assert f"function {function}(" in lua
    # chatmail-metadata's own default is upstream's service, and so is render's
    assert result["defaultPushNotificationUrl"] == DEFAULT_NOTIFY_URL
    assert render({"domain": DOMAIN}, tmp_path)["daemons"]["metadata"][-1] == DEFAULT_NOTIFY_URL


def test_quota_follows_the_settings(tmp_path):
    result = render({"domain": DOMAIN, "settings": {"max_mailbox_size": "300K",
                                                    "max_message_size": 1234567}}, tmp_path)
    plugin = result["dovecot"]["plugin"]
    assert plugin["quota"] == "maildir:User quota"
    assert plugin["quota_rule"] == "*:storage=300K"
    assert plugin["quota_max_mail_size"] == 1234567
    assert "300K" in plugin["quota_exceeded_message"]
    assert result["postfixMain"]["message_size_limit"] == 1234567


# --- escape hatches and problems ----------------------------------------------------------------


def test_escape_hatches_merge_recursively_and_null_removes(tmp_path):
    result = render({
        "domain": DOMAIN,
        "postfixMain": {"smtpd_peername_lookup": None, "maillog_file": "/var/log/x.log"},
        "postfixMaster": {"submission": {"maxproc": 7}, "postlog": None},
        "dovecot": {"service imap-login": {"process_min_avail": 1, "vsz_limit": None},
                    "new section": {"a": None, "b": 1}},
    }, tmp_path)
    main, master, dovecot = result["postfixMain"], result["postfixMaster"], result["dovecot"]
    assert "smtpd_peername_lookup" not in main and main["maillog_file"] == "/var/log/x.log"
    assert "maillog_file = /var/log/x.log\n" in result["mainCf"]
    assert master["submission"]["maxproc"] == 7 and master["submission"]["command"] == "smtpd"
    assert "postlog" not in master and "postlogd" not in result["masterCf"]
    assert dovecot["service imap-login"] == {"process_min_avail": 1, "service_count": 0}
    assert dovecot["new section"] == {"b": 1}


@pytest.mark.parametrize("domain", ["_r1.test", "chat.example.org", "a-b.c_d.test"])
def test_good_domains(tmp_path, domain):
    assert render({"domain": domain}, tmp_path)["problems"] == []


@pytest.mark.parametrize("domain", ["localhost", "Chat.Example.org", "-a.test", "a-.test",
                                    "a..test", "a b.test", "x" * 64 + ".test"])
def test_bad_domains_are_problems(tmp_path, domain):
    problems = render({"domain": domain}, tmp_path)["problems"]
    assert len(problems) == 1 and "is not a DNS name" in problems[0]


@pytest.mark.parametrize(("settings", "message"), [
    ({"username_min_length": 10}, "make username_max_length at least 10"),
    ({"filtermail_smtp_port": 10025}, "collides with postfix_reinject_port"),
    ({"postfix_reinject_port_incoming": 993}, "collides with the imaps listener"),
    ({"postfix_mxdeliv_port": 10082}, "collides with filtermail_http_port_incoming"),
    ({"filtermail_smtp_port": 70000}, "is not a TCP port"),
    ({"passthrough_senders": ["bot@x.test"]},
     "settings.passthrough_senders is no longer supported: upstream chatmail relay 1.11 removed"),
    ({"passthrough_recipients": []}, "settings.passthrough_recipients is no longer supported"),
])
def test_bad_settings_are_problems(tmp_path, settings, message):
    problems = render({"domain": DOMAIN, "settings": settings}, tmp_path)["problems"]
    assert any(message in p for p in problems), problems


@pytest.mark.parametrize(("params", "message"), [
    ({}, "params.domain"),
    ({"domain": DOMAIN, "settings": {"mailboxes_dir": "/x"}}, "paths.mailboxesDir"),
    ({"domain": DOMAIN, "settings": {"mail_domain": "x.test"}}, "params.domain"),
])
def test_misuse_fails_with_a_message(tmp_path, params, message):
    with pytest.raises(NixError, match=message.replace(".", r"\.")):
        render(params, tmp_path)


def test_defaults_need_no_params(tmp_path):
    from nix_tools import RENDER, eval_json
    assert eval_json(f"(import {RENDER} {{ }}).defaults")["max_message_size"] == 31457280
