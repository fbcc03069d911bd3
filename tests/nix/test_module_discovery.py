"""modules/nginx.nix, modules/dkim.nix and the TLS modes with nginx (modules/tls.nix), evaluated
with nixpkgs' module system against ./stubs (needs NIXPKGS_LIB, as test_module.py)."""

from __future__ import annotations

import stat
import subprocess
from typing import Any

from chatmaild.autoconfig import render_autoconfig, render_mta_sts_policy
from nix_tools import REPO, eval_json
from test_module import (NIXPKGS_LIB, DOMAIN, dovecot_generation, evaluate, failed_assertions,  # noqa: F401
                         master_args, relay, ACME_TERMS)

SOCKET = "/run/opendkim/opendkim.sock"


def vhosts(summary: dict[str, Any]) -> dict[str, Any]:
    return summary["nginx"]["virtualHosts"]


def test_nginx_serves_the_rendered_site(tmp_path):
    summary = evaluate(relay(), tmp_path)
    assert summary["nginx"]["enable"] is True
    assert set(vhosts(summary)) == {DOMAIN, f"{DOMAIN}-http", f"autoconfig.{DOMAIN}",
                                    f"mta-sts.{DOMAIN}"}
    site = vhosts(summary)[DOMAIN]
    assert site["listen"][0] | {"extraParameters": []} == {
        "addr": "127.0.0.1", "port": 8443, "ssl": True, "proxyProtocol": False,
        "extraParameters": []}
    assert site["onlySSL"] and site["root"] == "/etc/chatmail/www"
    assert "proxy_pass http://127.0.0.1:3691;" in site["locations"]["= /new"]["extraConfig"]
    http = vhosts(summary)[f"{DOMAIN}-http"]
    assert [listen["port"] for listen in http["listen"]] == [80, 80] and not http["onlySSL"]
    assert "ssl_preread on;" in summary["nginx"]["streamConfig"]
    # the served files are chatmaild's reference renderings, installed under /etc/chatmail/www
    etc = summary["etc"]
    assert etc["chatmail/www/.well-known/autoconfig/mail/config-v1.1.xml"] == render_autoconfig(DOMAIN)
    assert etc["chatmail/www/.well-known/mta-sts.txt"] == render_mta_sts_policy(DOMAIN)
    # self-signed: the index page fetches a dclogin: URL from /new, which nginx rate-limits
    assert '<script src="/dclogin.js">' in etc["chatmail/www/index.html"]
    assert "limit_req zone=chatmail_new" in site["locations"]["= /new"]["extraConfig"]
    assert "limit_req_zone $binary_remote_addr zone=chatmail_new" in summary["nginx"]["appendHttpConfig"]
    assert {"info.html", "privacy.html"} <= {name.removeprefix("chatmail/www/") for name in etc}
    qr = summary["etcBuilt"]["chatmail/www/qr-chatmail-invite.png"]
    assert qr == f"qrencode -t PNG -s 8 -o $out DCACCOUNT:https://{DOMAIN}/new"


def test_a_publicly_trusted_relay_links_dcaccount_without_rate_limit(tmp_path):
    summary = evaluate(relay(tls={"mode": "acme"}), tmp_path)
    assert f'href="dcaccount:https://{DOMAIN}/new"' in summary["etc"]["chatmail/www/index.html"]
    assert "chatmail/www/dclogin.js" not in summary["etc"]
    assert "limit_req" not in vhosts(summary)[DOMAIN]["locations"]["= /new"]["extraConfig"]
    assert summary["nginx"]["appendHttpConfig"] == ""
    unit = summary["services"]["chatmail-newemail"]
    assert unit["serviceConfig"]["ExecStart"].endswith("--listen 127.0.0.1:3691")


def test_newemail_service(tmp_path):
    unit = evaluate(relay(), tmp_path)["services"]["chatmail-newemail"]
    assert unit["serviceConfig"]["ExecStart"].endswith(
        "/bin/chatmail-newemail /etc/chatmail/chatmail.ini --listen 127.0.0.1:3691 --self-signed")
    assert unit["serviceConfig"]["IPAddressAllow"] == "localhost"


def test_alpn_off_puts_the_site_on_443(tmp_path):
    summary = evaluate(relay(nginx={"alpnMultiplexing": False}), tmp_path)
    assert summary["nginx"]["streamConfig"] == ""
    assert [listen["port"] for listen in vhosts(summary)[DOMAIN]["listen"]] == [443, 443]
    autoconfig = summary["etc"]["chatmail/www/.well-known/autoconfig/mail/config-v1.1.xml"]
    assert autoconfig == render_autoconfig(DOMAIN, alpn_port_443=False)


def test_nginx_off(tmp_path):
    summary = evaluate(relay(nginx={"enable": False}, openFirewall=True), tmp_path)
    assert summary["nginx"]["enable"] is False
    assert "chatmail-newemail" not in summary["services"]
    assert 443 not in summary["firewallPorts"] and 80 not in summary["firewallPorts"]


def test_mail_over_https(tmp_path):
    summary = evaluate(relay(), tmp_path)
    site = vhosts(summary)[DOMAIN]["locations"]
    assert "proxy_pass http://127.0.0.1:10082;" in site["/mxdeliv"]["extraConfig"]
    services = summary["services"]
    assert services["chatmail-mxdeliv"]["serviceConfig"]["ExecStart"].endswith(
        "/bin/chatmail-mxdeliv /etc/chatmail/chatmail.ini incoming")
    assert services["chatmail-mxdeliv-outgoing"]["serviceConfig"]["ExecStart"].endswith(
        "/bin/chatmail-mxdeliv /etc/chatmail/chatmail.ini outgoing"
        " --ca-file /etc/ssl/certs/ca-certificates.crt")
    assert "multi-user.target" in services["chatmail-mxdeliv"]["wantedBy"]
    main, master = summary["postfix"]["main"], summary["postfix"]["master"]
    assert main["smtp_fallback_relay"] == "[127.0.0.1]:10084"
    assert master["mxdeliv"]["name"] == "127.0.0.1:10027"
    # port 25's checks: filtermail's incoming milter and the cleanup without Received headers
    assert master_args(master["mxdeliv"])["smtpd_milters"] == master_args(master["smtp_inet"])["smtpd_milters"]
    assert master_args(master["mxdeliv"])["cleanup_service_name"] == "incomingclean"

    # without nginx nothing serves /mxdeliv: receiving is off by default, sending stays on
    summary = evaluate(relay(nginx={"enable": False}), tmp_path)
    assert "chatmail-mxdeliv" not in summary["services"]
    assert "mxdeliv" not in summary["postfix"]["master"]
    assert "chatmail-mxdeliv-outgoing" in summary["services"]
    summary = evaluate(relay(mxdeliv={"fallback": False}), tmp_path)
    assert "chatmail-mxdeliv-outgoing" not in summary["services"]
    assert "smtp_fallback_relay" not in summary["postfix"]["main"]
    failed = failed_assertions(relay(nginx={"enable": False}, mxdeliv={"enable": True}), tmp_path)
    assert any("services.chatmail.mxdeliv.enable needs nginx" in m for m in failed), failed


def test_self_signed_certificate_is_shared_with_nginx(tmp_path):
    summary = evaluate(relay(), tmp_path)
    site = vhosts(summary)[DOMAIN]
    assert site["sslCertificate"] == "/var/lib/chatmail-tls/cert.pem"
    assert site["sslCertificateKey"] == "/var/lib/chatmail-tls/key.pem"
    assert set(summary["groupMembers"]["chatmail-tls"]) == {"postfix", "nginx"}
    unit = summary["services"]["chatmail-tls-selfsigned"]
    assert unit["serviceConfig"]["Group"] == "chatmail-tls"
    assert "nginx.service" in unit["requiredBy"]
    for name in (DOMAIN, f"autoconfig.{DOMAIN}", f"mta-sts.{DOMAIN}", f"www.{DOMAIN}"):
        assert f"DNS:{name}" in unit["script"]
    # run with this host's openssl: key and certificate end up group-readable, also when an
    # older pair (0600) is already there
    script = (unit["script"]
              .replace("/nix/store/00000000000000000000000000000000-openssl-3.5.0/bin/openssl",
                       "openssl")
              .replace("/var/lib/chatmail-tls/", f"{tmp_path}/"))
    for _ in range(2):
        subprocess.run(["bash", "-euo", "pipefail", "-c", script], check=True,
                       capture_output=True, timeout=60)
        for name in ("key.pem", "cert.pem"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640
        (tmp_path / "key.pem").chmod(0o600)


def test_acme_through_nginx(tmp_path):
    summary = evaluate(relay(tls={"mode": "acme"}), tmp_path, **ACME_TERMS)
    cert = summary["acmeCerts"][DOMAIN]
    assert cert["webroot"] == "/var/lib/acme/acme-challenge"
    assert cert.get("listenHTTP") is None
    assert cert["group"] == "chatmail-tls"
    assert cert["extraDomainNames"] == [f"autoconfig.{DOMAIN}", f"mta-sts.{DOMAIN}",
                                        f"www.{DOMAIN}"]
    assert "nginx.service" in cert["reloadServices"]
    for vhost in (DOMAIN, f"autoconfig.{DOMAIN}", f"mta-sts.{DOMAIN}"):
        assert vhosts(summary)[vhost]["useACMEHost"] == DOMAIN
    # port 80 answers the challenge from the same directory
    http = vhosts(summary)[f"{DOMAIN}-http"]["locations"]["/.well-known/acme-challenge/"]
    assert "root /var/lib/acme/acme-challenge;" in http["extraConfig"]
    assert evaluate(relay(tls={"mode": "acme"}), tmp_path, "failedAssertions", **ACME_TERMS) == []


def test_acme_without_nginx_uses_its_own_listener(tmp_path):
    chatmail = relay(tls={"mode": "acme"}, nginx={"enable": False})
    cert = evaluate(chatmail, tmp_path, **ACME_TERMS)["acmeCerts"][DOMAIN]
    assert cert["listenHTTP"] == ":80" and cert["webroot"] is None
    assert evaluate(chatmail, tmp_path, "failedAssertions", **ACME_TERMS) == []


def test_acme_listener_and_nginx_contradict(tmp_path):
    failed = evaluate(relay(tls={"mode": "acme"}), tmp_path, "failedAssertions",
                      security={"acme": {"acceptTerms": True,
                                         "certs": {DOMAIN: {"listenHTTP": ":80"}}}})
    assert any("listenHTTP" in message and "nginx" in message for message in failed), failed


def test_port_collision_is_refused(tmp_path):
    failed = failed_assertions(relay(nginx={"httpsPort": 4000, "newemailPort": 4000}), tmp_path)
    assert any("httpsPort and newemailPort" in message for message in failed), failed


def test_opendkim(tmp_path):
    summary = evaluate(relay(), tmp_path)
    opendkim = summary["opendkim"]
    assert opendkim == {
        "enable": True, "socket": f"local:{SOCKET}", "domains": f"csl:{DOMAIN}",
        "keyPath": "/var/lib/opendkim/keys", "selector": "opendkim",
        "configFile": "/etc/opendkim/chatmail.conf"}
    conf = summary["etc"]["opendkim/chatmail.conf"]
    assert "MTA ORIGINATING\n" in conf and "Mode s\n" in conf
    # options nixpkgs passes on the command line stay out of the file
    assert not any(line.split()[0] in ("Domain", "KeyFile", "Selector", "Socket")
                   for line in conf.splitlines())
    assert "opendkim" in summary["userGroups"]["postfix"]
    unit = summary["services"]["opendkim"]["serviceConfig"]
    assert unit["UMask"] == "0007"
    assert "opendkim.service" in summary["services"]["postfix"]["after"]
    master = summary["postfix"]["master"]
    for service in ("submission", "submissions"):
        assert master_args(master[service])["smtpd_milters"].endswith(f",unix:{SOCKET}")
        assert master_args(master[service])["milter_macro_daemon_name"] == "ORIGINATING"
    main = summary["postfix"]["main"]
    assert main["non_smtpd_milters"] == [f"unix:{SOCKET}"]
    assert main["internal_mail_filter_classes"] == ["bounce", "notify"]


def test_dkim_selector(tmp_path):
    summary = evaluate(relay(dkim={"selector": "s2026"}), tmp_path)
    assert summary["opendkim"]["selector"] == "s2026"


def test_dkim_off(tmp_path):
    summary = evaluate(relay(dkim={"enable": False}), tmp_path)
    assert summary["opendkim"] == {}
    master = summary["postfix"]["master"]
    # filtermail stays; it no longer asks for DKIM signatures of incoming mail
    assert master_args(master["submission"])["smtpd_milters"] == "unix:/run/filtermail/outgoing.sock"
    assert summary["postfix"]["main"]["non_smtpd_milters"] == []
    incoming = summary["services"]["filtermail-incoming"]["serviceConfig"]["ExecStart"]
    assert incoming.endswith(" incoming-milter /run/filtermail/incoming.sock --skip-dkim")


def test_flake_app_dns_zone():
    expression = f"""
      let
        lib = import {NIXPKGS_LIB};
        flake = import {REPO / "flake.nix"};
        nixpkgs = {{ inherit lib; outPath = {REPO / "tests" / "nix" / "stubs" / "nixpkgs"}; }};
        self = flake.outputs {{ inherit self nixpkgs; }};
      in
      lib.mapAttrs (_: apps: lib.mapAttrs (_: app: {{
        inherit (app) type; program = toString app.program; }}) apps) self.apps
    """
    apps = eval_json(expression)
    assert sorted(apps) == ["aarch64-linux", "x86_64-linux"]
    for system_apps in apps.values():
        assert system_apps["dns-zone"]["type"] == "app"
        assert system_apps["dns-zone"]["program"].endswith("-chatmaild/bin/chatmail-dns-zone")
