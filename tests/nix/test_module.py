"""The NixOS module (modules/), evaluated with nixpkgs' module system against ./stubs.

Every test runs once per services.dovecot2 generation (test ids `dovecot-pr500271`,
`dovecot-typed`; tests/nix/stubs/dovecot-*.nix say which nixpkgs form each stands for).

Needs nixpkgs' lib (never copied into this repository): NIXPKGS_LIB=/path/to/nixpkgs/lib.
Without it every test here is reported as skipped.
"""

from __future__ import annotations

import contextvars
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nix_tools import REPO, NixError, eval_json

NIXPKGS_LIB = os.environ.get("NIXPKGS_LIB")
if not NIXPKGS_LIB:
    print("tests/nix/test_module.py: NIXPKGS_LIB is not set; module evaluation skipped")
    pytest.skip("NIXPKGS_LIB (nixpkgs' lib directory) is not set", allow_module_level=True)

EVAL_MODULE = REPO / "tests" / "nix" / "eval-module.nix"
DOMAIN = "chat.example.org"
TOOL_TIMEOUT = 60
# stubs/dovecot-<generation>.nix: NixOS/nixpkgs PR 500271's form and the newest (typed) one
DOVECOT_GENERATIONS = ("pr500271", "typed")
DOVECOT_UNIT = {"pr500271": "dovecot2", "typed": "dovecot"}
_generation: contextvars.ContextVar[str] = contextvars.ContextVar("dovecot_generation")


@pytest.fixture(autouse=True, params=DOVECOT_GENERATIONS, ids=lambda g: f"dovecot-{g}")
def dovecot_generation(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs each test of the modules that import this fixture against both generations."""
    token = _generation.set(request.param)
    yield request.param
    _generation.reset(token)


def evaluate(chatmail: dict[str, Any], tmp_path: Path, attr: str = "summary",
             **other: Any) -> Any:
    config_file = tmp_path / "config.json"
    services = {"chatmail": chatmail, **other.pop("services", {})}
    config_file.write_text(json.dumps({"services": services, **other}))
    return eval_json(
        f"(import {EVAL_MODULE} {{ nixpkgsLib = {NIXPKGS_LIB}; configFile = {config_file};"
        f" dovecotGeneration = \"{_generation.get()}\"; }}).{attr}"
    )


def without_section_titles(settings: Any) -> Any:
    """Dovecot settings as set: the `_section` type/name nixpkgs adds to each section dropped."""
    if isinstance(settings, dict):
        return {key: without_section_titles(value) for key, value in settings.items()
                if key != "_section"}
    return settings


def relay(**extra: Any) -> dict[str, Any]:
    return {"enable": True, "domain": DOMAIN, "tls": {"mode": "selfSigned"}, **extra}


def failed_assertions(chatmail: dict[str, Any], tmp_path: Path) -> list[str]:
    return evaluate(chatmail, tmp_path, "failedAssertions")


@pytest.fixture
def summary(tmp_path: Path) -> dict[str, Any]:
    return evaluate(relay(openFirewall=True), tmp_path)


def master_args(entry: dict[str, Any]) -> dict[str, str]:
    args = entry.get("args", [])
    return dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "-o")


# --- a default relay ----------------------------------------------------------------------------


def test_default_relay_has_no_failed_assertions(tmp_path):
    assert failed_assertions(relay(), tmp_path) == []


def test_postfix_gets_the_rendered_config(summary):
    postfix = summary["postfix"]
    assert postfix["enable"] is True
    main = postfix["main"]
    assert main["myhostname"] == main["virtual_mailbox_domains"] == DOMAIN
    assert main["compatibility_level"] == "3.6"  # over nixpkgs' mkDefault
    assert main["smtpd_tls_chain_files"] == ["/var/lib/chatmail-tls/key.pem",
                                             "/var/lib/chatmail-tls/cert.pem"]
    assert main["smtp_tls_CAfile"] == "/etc/ssl/certs/ca-certificates.crt"
    master = postfix["master"]
    assert master_args(master["smtp_inet"])["smtpd_milters"] == "unix:/run/filtermail/incoming.sock"
    assert master_args(master["submission"])["smtpd_milters"] == (
        "unix:/run/filtermail/outgoing.sock,unix:/run/opendkim/opendkim.sock")
    assert master_args(master["submissions"])["smtpd_tls_wrappermode"] == "yes"
    # nixpkgs' own relay entry is replaced, not appended to: its args appear once.
    assert master["relay"]["args"] == ["-o", "smtp_fallback_relay="]
    assert "reinject" not in master and "reinject_incoming" not in master
    assert main["milter_default_action"] == "tempfail"
    assert main["non_smtpd_milters"] == ["unix:/run/opendkim/opendkim.sock"]


def test_postfix_accepts_config_as_nixpkgs_writes_it(summary, tmp_path):
    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text(summary["postfix"]["mainCf"] + "\n")
    (conf / "master.cf").write_text(summary["postfix"]["masterCf"] + "\n")
    for args in (["-n"], ["-M"]):
        proc = subprocess.run(["postconf", "-c", str(conf), *args], capture_output=True,
                              text=True, timeout=TOOL_TIMEOUT)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_dovecot_gets_23_and_the_rendered_settings(summary, dovecot_generation):
    dovecot = summary["dovecot"]
    assert dovecot["enable"] is True
    assert dovecot["packageVersion"].startswith("2.3.")
    # nixpkgs builds Dovecot without Lua; the LMTP push script needs it
    assert dovecot["packageOverrides"] == {"withLua": True}
    assert dovecot["enablePAM"] is False and dovecot["createMailUser"] is False
    settings = without_section_titles(dovecot["settings"])
    assert "mail_path" not in settings  # 2.4's name; no generation sets it for 2.3
    assert settings["mail_location"] == f"maildir:/var/lib/vmail/mail/{DOMAIN}/%u"
    assert settings["auth_mechanisms"] == ["plain"]
    assert settings["mail_plugin_dir"].endswith("-dovecot-2.3.21.1/lib/dovecot/modules")
    assert settings["passdb"] == {"driver": "dict",
                                  "args": "/etc/dovecot/chatmail-auth-dict.conf"}
    # the older generation's "service auth" { user = root } is overridden, not merged
    assert settings["service auth"]["user"] == "$default_internal_user"
    assert "unix_listener /var/lib/postfix/queue/private/auth" in settings["service auth"]
    assert settings["ssl"] == "required" and settings["disable_plaintext_auth"] is True
    assert "ssl_dh" not in settings  # no DH parameters (TLS 1.3 only)
    unit = DOVECOT_UNIT[dovecot_generation]
    assert summary["services"][unit]["wantedBy"] == ["multi-user.target"]
    assert set(summary["services"]) & set(DOVECOT_UNIT.values()) == {unit}


def test_dovecot_conf_is_the_same_in_both_generations(tmp_path):
    """Both generations write a dovecot.conf that Dovecot reads as the same configuration."""
    shown = {}
    for generation in DOVECOT_GENERATIONS:
        token = _generation.set(generation)
        try:
            summary = evaluate(relay(dovecot=this_hosts_dovecot(tmp_path)), tmp_path)
        finally:
            _generation.reset(token)
        conf = tmp_path / f"dovecot-{generation}.conf"
        conf.write_text(summary["dovecot"]["conf"] + "\n")
        proc = subprocess.run(["doveconf", "-c", str(conf), "-n"], capture_output=True,
                              text=True, timeout=TOOL_TIMEOUT)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        shown[generation] = proc.stdout.replace(str(conf), "CONF")
    assert shown["pr500271"] == shown["typed"]
    assert "passdb {\n  args = /etc/dovecot/chatmail-auth-dict.conf\n  driver = dict\n}" in shown["typed"]


@pytest.mark.parametrize(("setting", "value"), [
    ("auth_mechanisms", "plain"),  # what render.nix wrote before: a string
    ("base_dir", "run/dovecot"),  # a path must be absolute
])
def test_typed_generation_refuses_wrongly_typed_settings(tmp_path, dovecot_generation, setting,
                                                        value):
    chatmail = relay(dovecot={setting: value})
    if dovecot_generation == "typed":
        with pytest.raises(NixError, match=setting):
            evaluate(chatmail, tmp_path)
    else:  # the older generation takes any Dovecot value
        assert evaluate(chatmail, tmp_path)["dovecot"]["settings"][setting] == value


@pytest.mark.parametrize("option", ["enableImap", "enableDHE", "sslServerCert"])
def test_options_only_the_older_generation_has(tmp_path, dovecot_generation, option):
    value = "/c.pem" if option == "sslServerCert" else True
    other = {"services": {"chatmail": relay(), "dovecot2": {option: value}}}
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(other))
    expression = (f"(import {EVAL_MODULE} {{ nixpkgsLib = {NIXPKGS_LIB}; configFile = {config_file};"
                  f" dovecotGeneration = \"{dovecot_generation}\"; }})")
    if option == "sslServerCert" or dovecot_generation == "typed":
        # removed: an assertion (mkRemovedOptionModule) or an error when read
        try:
            failed = eval_json(expression + ".failedAssertions")
        except NixError as error:
            assert option in str(error)
        else:
            assert any(option in message for message in failed), failed
    else:
        assert eval_json(expression + ".failedAssertions") == []


def test_a_dovecot2_unit_is_refused_by_the_typed_generation(tmp_path, dovecot_generation):
    failed = evaluate(relay(), tmp_path, "failedAssertions",
                      systemd={"services": {"dovecot2": {"serviceConfig": {"LimitNOFILE": 1}}}})
    refused = any("`dovecot2` systemd service" in message for message in failed)
    assert refused == (dovecot_generation == "typed")


def this_hosts_dovecot(tmp_path: Path) -> dict[str, Any]:
    """Escape-hatch settings that let this host's doveconf read a NixOS dovecot.conf."""
    return {"base_dir": str(tmp_path / "run"), "state_dir": str(tmp_path / "state"),
            "instance_name": "module-test", "mail_plugin_dir": "/usr/lib/dovecot/modules",
            "default_internal_user": "dovecot", "default_internal_group": "dovecot"}


NOTIFY_DELAY_PATCH = REPO / "pkgs" / "dovecot" / "no-notify-delay.patch"


def test_dovecot_is_patched_without_the_notify_delay_by_default(summary):
    # pkgs/dovecot/overlay.nix on top of nixpkgs' dovecot_2_3, Lua kept
    assert summary["dovecot"]["packagePatches"] == [str(NOTIFY_DELAY_PATCH)]
    assert summary["dovecot"]["packageOverrides"] == {"withLua": True}


def test_dovecot_stock_package_on_request(tmp_path):
    dovecot = evaluate(relay(dovecotWithoutNotifyDelay=False), tmp_path)["dovecot"]
    assert dovecot["packagePatches"] == []
    assert dovecot["packageOverrides"] == {"withLua": True}


def test_inotify_instances_for_every_idle_session(summary, tmp_path):
    # one per IMAP session in IDLE; the kernel's 128 would leave the rest polling every 30 s
    assert summary["sysctl"]["fs.inotify.max_user_instances"] == 524288
    changed = evaluate(relay(), tmp_path, boot={"kernel": {"sysctl": {"fs.inotify.max_user_instances": 8192}}})
    assert changed["sysctl"]["fs.inotify.max_user_instances"] == 8192


def test_notify_delay_patch_sets_every_delay_to_zero():
    # the three places Dovecot 2.3 defines NOTIFY_DELAY_MSECS (IDLE on maildir uses the first)
    text = NOTIFY_DELAY_PATCH.read_text()
    files = [line.split()[1] for line in text.splitlines() if line.startswith("+++ ")]
    assert files == ["b/src/lib-storage/index/imapc/imapc-mailbox.c",
                     "b/src/lib-storage/list/mailbox-list-index-notify.c",
                     "b/src/lib-storage/mailbox-watch.c"]
    assert text.count("\n-#define NOTIFY_DELAY_MSECS 500\n") == 3
    assert text.count("\n+#define NOTIFY_DELAY_MSECS 0\n") == 3


def test_dovecot_accepts_config_as_nixpkgs_writes_it(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", f"/CN={DOMAIN}",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=TOOL_TIMEOUT)
    for settings in ({}, {"imap_compress": True, "imap_rawlog": True, "disable_ipv6": True}):
        summary = evaluate(relay(
            tls={"mode": "manual", "certificateFile": str(cert), "keyFile": str(key)},
            settings=settings,
            # This host's Dovecot: its plugins and users instead of the NixOS ones.
            dovecot=this_hosts_dovecot(tmp_path),
        ), tmp_path)
        conf = tmp_path / "dovecot.conf"
        conf.write_text(summary["dovecot"]["conf"] + "\n")
        proc = subprocess.run(["doveconf", "-c", str(conf), "-n"], capture_output=True,
                              text=True, timeout=TOOL_TIMEOUT)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert f"ssl_cert = <{cert}" in summary["dovecot"]["conf"]


def test_daemons_run_hardened_from_the_package(summary):
    services = summary["services"]
    package_bin = "/nix/store/00000000000000000000000000000000-chatmaild-0.1.0/bin"
    expected = {
        "doveauth": f"{package_bin}/doveauth /run/doveauth/doveauth.socket /etc/chatmail/chatmail.ini",
        "filtermail": f"{package_bin}/filtermail /etc/chatmail/chatmail.ini outgoing-milter"
                      " /run/filtermail/outgoing.sock",
        "filtermail-incoming": f"{package_bin}/filtermail /etc/chatmail/chatmail.ini incoming-milter"
                               " /run/filtermail/incoming.sock",
        "chatmail-metadata": f"{package_bin}/chatmail-metadata /run/chatmail-metadata/metadata.socket"
                             " /etc/chatmail/chatmail.ini"
                             " --notify-url https://notifications.delta.chat/notify",
    }
    for name, exec_start in expected.items():
        unit = services[name]["serviceConfig"]
        assert unit["ExecStart"] == exec_start
        assert unit["Restart"] == "always"
        assert (unit["User"], unit["Group"]) == ("vmail", "vmail")
        assert unit["ProtectSystem"] == "strict" and unit["ProtectHome"] is True
        assert unit["NoNewPrivileges"] is True and unit["PrivateTmp"] is True
        assert unit["CapabilityBoundingSet"] == ""
        assert "@system-service" in unit["SystemCallFilter"]
        assert "multi-user.target" in services[name]["wantedBy"]
    doveauth = services["doveauth"]["serviceConfig"]
    assert doveauth["ReadWritePaths"] == [f"/var/lib/vmail/mail/{DOMAIN}"]
    assert doveauth["RuntimeDirectory"] == "doveauth"
    assert doveauth["RestrictAddressFamilies"] == ["AF_UNIX"]
    assert doveauth["PrivateNetwork"] is True
    metadata = services["chatmail-metadata"]["serviceConfig"]
    assert metadata["ReadWritePaths"] == [f"/var/lib/vmail/mail/{DOMAIN}"]
    assert metadata["RuntimeDirectory"] == "chatmail-metadata"
    assert "PrivateNetwork" not in metadata  # it POSTs to the notification service
    for name in ("filtermail", "filtermail-incoming"):
        unit = services[name]["serviceConfig"]
        assert unit["ReadWritePaths"] == ["/run/filtermail"]  # the milter sockets, nothing else
        assert "postfix.service" in services[name]["before"]
    # outgoing: the socket only; incoming asks the resolver for DKIM keys
    assert services["filtermail"]["serviceConfig"]["PrivateNetwork"] is True
    assert services["filtermail"]["serviceConfig"]["RestrictAddressFamilies"] == ["AF_UNIX"]
    assert "AF_INET" in services["filtermail-incoming"]["serviceConfig"]["RestrictAddressFamilies"]
    # vmail makes the sockets, Postfix's group may enter
    assert "d /run/filtermail 0750 vmail postfix -" in summary["rules"]


def test_metrics_endpoint_reads_the_journal_by_default(summary):
    unit = summary["services"]["chatmail-metrics"]["serviceConfig"]
    package_bin = "/nix/store/00000000000000000000000000000000-chatmaild-0.1.0/bin"
    assert unit["ExecStart"] == (
        f"{package_bin}/chatmail-metrics /etc/chatmail/chatmail.ini --address 127.0.0.1 --port 3903"
        " --dovecot-stats http://127.0.0.1:3904/metrics --journal")
    assert unit["DynamicUser"] is True and "User" not in unit
    assert unit["SupplementaryGroups"] == ["systemd-journal"] and unit["PrivateUsers"] is False
    assert unit["IPAddressAllow"] == "localhost"
    assert "mtail_address = 127.0.0.1\n" in summary["etc"]["chatmail/chatmail.ini"]
    assert summary["dovecot"]["settings"]["service stats"]["inet_listener http"]["port"] == 3904
    assert 3903 not in summary["firewallPorts"] and 3904 not in summary["firewallPorts"]


def test_metrics_off_and_elsewhere(tmp_path):
    off = evaluate(relay(metrics={"enable": False}), tmp_path)
    assert "chatmail-metrics" not in off["services"]
    assert "mtail_address" not in off["etc"]["chatmail/chatmail.ini"]
    assert "service stats" not in off["dovecot"]["settings"]
    vpn = evaluate(relay(metrics={"address": "10.8.0.1", "port": 9100}), tmp_path)
    unit = vpn["services"]["chatmail-metrics"]["serviceConfig"]
    assert "--address 10.8.0.1 --port 9100" in unit["ExecStart"] and "IPAddressDeny" not in unit


def test_journal_kept_in_memory_for_three_days_as_upstream(summary, tmp_path):
    assert summary["journald"] == {"storage": "volatile", "extraConfig": "MaxRetentionSec=3d"}
    own = evaluate(relay(logRetention=None), tmp_path)
    assert own["journald"] == {"storage": "persistent", "extraConfig": ""}
    longer = evaluate(relay(logRetention="12h"), tmp_path, services={"journald": {"storage": "persistent"}})
    assert longer["journald"] == {"storage": "persistent", "extraConfig": "MaxRetentionSec=12h"}
    with pytest.raises(NixError, match="logRetention"):
        evaluate(relay(logRetention="three days"), tmp_path)


def test_limits_reach_postfix_and_dovecot(tmp_path):
    summary = evaluate(relay(settings={"max_imap_connections": 500, "max_smtp_connections": 100}), tmp_path)
    assert summary["dovecot"]["settings"]["service imap"]["process_limit"] == 500
    for service in ("submission", "submissions"):
        assert summary["postfix"]["master"][service]["maxproc"] == 100
        assert master_args(summary["postfix"]["master"][service])["smtpd_client_connection_count_limit"] == "20"
    with pytest.raises(NixError, match="max_smtp_connections"):
        evaluate(relay(settings={"max_smtp_connections": 4}), tmp_path)
    with pytest.raises(NixError, match="max_load_1m"):
        evaluate(relay(settings={"max_load_1m": 0}), tmp_path)


def test_small_mailboxes_warn(summary, tmp_path):
    def ours(warnings: list[str]) -> list[str]:  # nixpkgs' own (e.g. about Dovecot 2.3) aside
        return [w for w in warnings if w.startswith("services.chatmail:")]

    assert ours(summary["warnings"]) == []
    (warning,) = ours(evaluate(relay(settings={"max_mailbox_size": "50M"}), tmp_path)["warnings"])
    assert warning.startswith("services.chatmail: settings.max_message_size (31457280 bytes)")


def test_expire_job_runs_daily_on_the_maildirs_only(summary):
    unit = summary["services"]["chatmail-expire"]["serviceConfig"]
    assert unit["ExecStart"] == ("/nix/store/00000000000000000000000000000000-chatmaild-0.1.0/bin/"
                                 "chatmail-expire /etc/chatmail/chatmail.ini --remove")
    assert unit["Type"] == "oneshot" and "Restart" not in unit
    assert unit["User"] == "vmail" and unit["ProtectSystem"] == "strict"
    assert unit["ReadWritePaths"] == [f"/var/lib/vmail/mail/{DOMAIN}"]
    assert unit["PrivateNetwork"] is True
    timer = summary["timers"]["chatmail-expire"]
    assert timer["wantedBy"] == ["timers.target"]
    assert timer["timerConfig"]["OnCalendar"] == "*-*-* 00:02:00"


def test_files_users_and_firewall(summary):
    assert summary["etc"]["chatmail/chatmail.ini"].startswith("[params]\n")
    lua = summary["etc"]["dovecot/push_notification.lua"]
    assert "function dovecot_lua_notify_event_message_new(" in lua
    driver = summary["dovecot"]["settings"]["plugin"]["push_notification_driver"]
    assert driver == "lua:file=/etc/dovecot/push_notification.lua"
    assert f"mail_domain = {DOMAIN}\n" in summary["etc"]["chatmail/chatmail.ini"]
    assert "uri = proxy:/run/doveauth/doveauth.socket:auth" in \
        summary["etc"]["dovecot/chatmail-auth-dict.conf"]
    assert summary["users"]["vmail"] == {"isSystemUser": True, "group": "vmail"}
    assert "vmail" in summary["groups"]
    assert f"d /var/lib/vmail/mail/{DOMAIN} 0700 vmail vmail -" in summary["rules"]
    assert "d /var/lib/postfix/queue/private 0700 postfix - -" in summary["rules"]
    # 80 and 443: nginx (modules/nginx.nix); 3478 and the relay ports: TURN (modules/realtime.nix)
    assert sorted(summary["firewallPorts"]) == [25, 80, 143, 443, 465, 587, 993, 3478]
    assert summary["firewallUdp"] == {"ports": [3478], "ranges": [{"from": 49152, "to": 65535}]}


def test_self_signed_certificate_unit(summary, dovecot_generation):
    unit = summary["services"]["chatmail-tls-selfsigned"]
    tls_users = ["postfix.service", f"{DOVECOT_UNIT[dovecot_generation]}.service", "nginx.service"]
    assert unit["before"] == unit["requiredBy"] == tls_users
    assert unit["serviceConfig"]["StateDirectory"] == "chatmail-tls"
    assert f"subjectAltName=DNS:{DOMAIN}" in unit["script"]


def test_self_signed_certificate_script_makes_a_strictly_valid_certificate(summary, tmp_path):
    # The unit's script with this host's openssl and paths in tmp_path; clients such as
    # Python >= 3.13 verify in X509 strict mode, as `openssl verify -x509_strict` does.
    script = summary["services"]["chatmail-tls-selfsigned"]["script"]
    stub_openssl = "/nix/store/00000000000000000000000000000000-openssl-3.5.0/bin/openssl"
    assert stub_openssl in script
    script = (script.replace(stub_openssl, "openssl")
              .replace("/var/lib/chatmail-tls/", f"{tmp_path}/"))
    def run_script() -> bytes:
        subprocess.run(["bash", "-euo", "pipefail", "-c", script], check=True,
                       capture_output=True, timeout=60)
        return (tmp_path / "cert.pem").read_bytes()

    assert run_script() == run_script()  # made once, kept afterwards
    proc = subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", "sslserver",
                           "-CAfile", str(tmp_path / "cert.pem"), str(tmp_path / "cert.pem")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    san = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "cert.pem"), "-noout",
                          "-ext", "subjectAltName"], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    assert f"DNS:{DOMAIN}" in san


def test_firewall_closed_unless_asked(tmp_path):
    assert evaluate(relay(), tmp_path)["firewallPorts"] == []


ACME_TERMS = {"security": {"acme": {"acceptTerms": True}}}


def test_acme(tmp_path, dovecot_generation):
    chatmail = relay(tls={"mode": "acme"}, openFirewall=True,
                     settings={"acme_email": "ops@example.org"})
    summary = evaluate(chatmail, tmp_path, **ACME_TERMS)
    cert = summary["acme"][DOMAIN]
    assert (cert["directory"], cert["email"]) == (f"/var/lib/acme/{DOMAIN}", "ops@example.org")
    assert cert["listenHTTP"] is None  # nginx answers the challenge (test_module_discovery.py)
    # nixpkgs' nginx module adds nginx.service itself (useACMEHost)
    assert sorted(cert["reloadServices"]) == sorted(
        ["postfix.service", f"{DOVECOT_UNIT[dovecot_generation]}.service", "nginx.service"])
    assert evaluate(chatmail, tmp_path, "failedAssertions", **ACME_TERMS) == []
    # security.acme's own assertion: the CA's terms must be accepted
    assert any("acceptTerms" in m for m in failed_assertions(chatmail, tmp_path))
    assert summary["postfix"]["main"]["smtpd_tls_chain_files"] == [
        f"/var/lib/acme/{DOMAIN}/key.pem", f"/var/lib/acme/{DOMAIN}/fullchain.pem"]
    assert 80 in summary["firewallPorts"]
    assert "chatmail-tls-selfsigned" not in summary["services"]


def test_settings_and_escape_hatches_reach_the_configs(tmp_path):
    summary = evaluate(relay(
        settings={"max_message_size": 1000, "filtermail_smtp_port": 20080, "www_folder": "/srv/www"},
        mailboxesDir="/srv/mail",
        postfix={"main": {"smtpd_peername_lookup": None, "smtp_host_lookup": "native"},
                 "master": {"submission": {"maxproc": 7}}},
        dovecot={"service imap-login": {"process_min_avail": 1}},
    ), tmp_path)
    main, master = summary["postfix"]["main"], summary["postfix"]["master"]
    assert main["message_size_limit"] == 1000
    assert "smtpd_peername_lookup" not in main and main["smtp_host_lookup"] == "native"
    assert master["submission"]["maxproc"] == 7
    assert summary["dovecot"]["settings"]["service imap-login"]["process_min_avail"] == 1
    ini = summary["etc"]["chatmail/chatmail.ini"]
    assert "www_folder = /srv/www\n" in ini  # freeform key
    assert "filtermail_smtp_port = 20080\n" in ini  # for filtermail's SMTP mode; unused here
    assert "mailboxes_dir = /srv/mail\n" in ini
    assert summary["services"]["doveauth"]["serviceConfig"]["ReadWritePaths"] == ["/srv/mail"]


def test_push_notification_url_reaches_chatmail_metadata(tmp_path):
    summary = evaluate(relay(pushNotificationUrl="https://push.example.org/n"), tmp_path)
    argv = summary["services"]["chatmail-metadata"]["serviceConfig"]["ExecStart"].split()
    assert argv[-2:] == ["--notify-url", "https://push.example.org/n"]


APP_VERSIONS = {"clients": [{"clientId": "deltachat", "sources": [{
    "sourceId": "gplay", "versionInteger": 754, "versionString": "2.57.0",
    "downloadUrl": "https://example.org/deltachat.apk"}]}]}


def test_app_versions_reach_chatmail_metadata(tmp_path):
    default = evaluate(relay(), tmp_path)
    assert "--appversions" not in default["services"]["chatmail-metadata"]["serviceConfig"]["ExecStart"]
    assert "chatmail/appversions.json" not in default["etc"]
    summary = evaluate(relay(appVersions=APP_VERSIONS), tmp_path)
    argv = summary["services"]["chatmail-metadata"]["serviceConfig"]["ExecStart"].split()
    assert argv[-2:] == ["--appversions", "/etc/chatmail/appversions.json"]
    assert json.loads(summary["etc"]["chatmail/appversions.json"]) == APP_VERSIONS


@pytest.mark.parametrize("bad", [{"versionInteger": "754"}, {"versionInteger": 2**32},
                                 {"versionString": ""}])
def test_app_versions_of_the_wrong_type_fail_evaluation(tmp_path, bad):
    source = {**APP_VERSIONS["clients"][0]["sources"][0], **bad}
    index = {"clients": [{"clientId": "deltachat", "sources": [source]}]}
    with pytest.raises(NixError, match=next(iter(bad))):
        evaluate(relay(appVersions=index), tmp_path)


def test_maildirs_under_home_stay_reachable(tmp_path):
    services = evaluate(relay(mailboxesDir="/home/vmail/mail/x"), tmp_path)["services"]
    for name in ("doveauth", "filtermail", "filtermail-incoming", "chatmail-expire"):
        assert services[name]["serviceConfig"]["ProtectHome"] == "read-only", name


# --- assertions with their messages -------------------------------------------------------------


@pytest.mark.parametrize(("chatmail", "message"), [
    ({"enable": True, "tls": {"mode": "selfSigned"}},
     'services.chatmail.domain is not set; write e.g. services.chatmail.domain = "chat.example.org";'),
    (relay(domain="localhost"), 'domain "localhost" is not a DNS name'),
    (relay(domain="Chat.Example.org"), "write e.g. \"chat.example.org\""),
    (relay(settings={"username_min_length": 12}), "make username_max_length at least 12"),
    (relay(settings={"filtermail_smtp_port": 10026}),
     "settings.filtermail_smtp_port = 10026 collides with postfix_reinject_port_incoming"),
    (relay(settings={"postfix_reinject_port": 587}), "collides with the submission listener"),
    (relay(settings={"passthrough_recipients": ["@example.net"]}),
     "services.chatmail: settings.passthrough_recipients is no longer supported: upstream chatmail relay"
     " 1.11 removed passthrough senders and recipients, so that unencrypted mail never passes;"
     " remove the setting."),
    (relay(settings={"mailboxes_dir": "/srv/mail"}),
     "services.chatmail.settings.mailboxes_dir is not used; set services.chatmail.mailboxesDir instead."),
    (relay(settings={"mail_domain": "x.test"}), "set services.chatmail.domain instead."),
    (relay(settings={"mtail_address": "127.0.0.1"}), "set services.chatmail.metrics.address instead."),
    (relay(tls={"mode": "manual", "certificateFile": "/c.pem"}),
     'tls.mode = "manual" needs both services.chatmail.tls.certificateFile and services.chatmail.tls.keyFile'),
    (relay(tls={"mode": "selfSigned", "keyFile": "/k.pem"}),
     'set services.chatmail.tls.mode = "manual"; or remove them'),
])
def test_bad_configurations_fail_with_a_message(tmp_path, chatmail, message):
    failed = failed_assertions(chatmail, tmp_path)
    assert any(message in m for m in failed), failed


def test_disabled_module_sets_nothing(tmp_path):
    summary = evaluate({"enable": False, "domain": "not a domain"}, tmp_path)
    assert summary["postfix"]["enable"] is False and summary["dovecot"]["enable"] is False
    assert summary["services"] == {} and summary["timers"] == {}
    assert summary["etc"] == {} and summary["rules"] == []


def test_typed_settings_reject_wrong_values(tmp_path):
    with pytest.raises(NixError, match="max_mailbox_size"):
        evaluate(relay(settings={"max_mailbox_size": "lots"}), tmp_path)
    with pytest.raises(NixError, match="filtermail_smtp_port"):
        evaluate(relay(settings={"filtermail_smtp_port": 70000}), tmp_path)


# --- option declarations ------------------------------------------------------------------------


def test_every_ini_setting_has_a_documented_option(tmp_path):
    options = {o["name"]: o for o in evaluate(relay(), tmp_path, "options")}
    defaults = eval_json(f"(import {REPO / 'modules' / 'render.nix'} {{ }}).defaults")
    for key, value in defaults.items():
        option = options[f"services.chatmail.settings.{key}"]
        assert option["description"], key
        assert option["default"]["text"] == json_to_nix(value), key
    for name in ("enable", "domain", "package", "openFirewall", "tls.mode", "tls.certificateFile",
                 "tls.keyFile", "mailboxesDir", "postfix.main", "postfix.master", "dovecot"):
        assert options[f"services.chatmail.{name}"]["description"], name
    assert options["services.chatmail.rendered"]["internal"]


def json_to_nix(value: Any) -> str:
    """How lib.generators.toPretty shows a default (what the option docs show)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[ ]" if not value else "[ " + " ".join(json_to_nix(v) for v in value) + " ]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)
