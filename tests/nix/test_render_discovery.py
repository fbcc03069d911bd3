"""modules/render-discovery.nix (render.nix's `discovery`): the served documents equal chatmaild's
reference renderings, Debian's nginx 1.22 accepts the nginx config (stream + ssl_preread),
Debian's opendkim accepts the OpenDKIM config, and Postfix's reinject services use the milter."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatmaild.autoconfig import render_autoconfig, render_mta_sts_policy
from nix_tools import render

DOMAIN = "_r1.test"
TOOL_TIMEOUT = 60
DEBIAN_NGINX_MODULES = "/usr/lib/nginx/modules"


@pytest.fixture
def safe_dir() -> Iterator[Path]:
    # opendkim refuses keys below a directory others may write to (/tmp), so not tmp_path
    path = Path(tempfile.mkdtemp(prefix="render-discovery-", dir="/run"))
    path.chmod(0o700)
    yield path
    shutil.rmtree(path)


def discovery(tmp_path: Path, **params: Any) -> dict[str, Any]:
    return render({"domain": DOMAIN, **params}, tmp_path)["discovery"]


@pytest.mark.parametrize("alpn", [True, False])
def test_autoconfig_equals_chatmaild_rendering(tmp_path, alpn):
    www = discovery(tmp_path, discovery={"alpn": alpn})["www"]
    assert www[".well-known/autoconfig/mail/config-v1.1.xml"] == render_autoconfig(
        DOMAIN, alpn_port_443=alpn
    )


def test_mta_sts_policy_equals_chatmaild_rendering(tmp_path):
    www = discovery(tmp_path)["www"]
    assert www[".well-known/mta-sts.txt"] == render_mta_sts_policy(DOMAIN)


def test_index_page_links_the_account_url_and_shows_its_qr_code(tmp_path):
    result = discovery(tmp_path, discovery={"selfSigned": False})
    index = result["www"]["index.html"]
    assert f'href="dcaccount:https://{DOMAIN}/new"' in index
    assert result["qr"] == {"file": "qr-chatmail-invite.png",
                            "content": f"DCACCOUNT:https://{DOMAIN}/new"}
    assert '<img src="/qr-chatmail-invite.png"' in index
    main = next(s for s in result["nginx"]["servers"] if s["name"] == DOMAIN)
    assert "default_type image/png;" in main["locations"]["= /qr-chatmail-invite.png"]


def nginx_test(conf_text: str, directory: Path) -> subprocess.CompletedProcess[str]:
    conf = directory / "nginx.conf"
    conf.write_text(conf_text)
    return subprocess.run(
        ["nginx", "-t", "-p", str(directory), "-c", str(conf)],
        capture_output=True, text=True, timeout=TOOL_TIMEOUT,
    )


def self_signed(directory: Path) -> dict[str, str]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", f"/CN={DOMAIN}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=TOOL_TIMEOUT,
    )
    return {"tlsCert": str(cert), "tlsKey": str(key)}


def local_paths(directory: Path) -> dict[str, str]:
    for name in ("www", "run", "log", "keys"):
        (directory / name).mkdir(exist_ok=True)
    return {
        **self_signed(directory),
        "wwwDir": str(directory / "www"),
        "nginxRunDir": str(directory / "run"),
        "nginxLogDir": str(directory / "log"),
        "dkimKeyDir": str(directory / "keys"),
        "opendkimSocket": str(directory / "run" / "opendkim.sock"),
    }


@pytest.mark.parametrize(
    "options", [{}, {"alpn": False}, {"httpsPort": 9443, "newemailPort": 4000}],
    ids=["alpn", "no-alpn", "ports"],
)
@pytest.mark.parametrize("ipv6", [True, False], ids=["ipv6", "ipv4"])
def test_debian_nginx_accepts_config(tmp_path, options, ipv6):
    result = discovery(
        tmp_path,
        settings={"disable_ipv6": not ipv6},
        discovery={"nginxModulesDir": DEBIAN_NGINX_MODULES, **options},
        paths=local_paths(tmp_path),
    )
    checked = nginx_test(result["nginx"]["conf"], tmp_path)
    assert checked.returncode == 0, checked.stderr
    conf = result["nginx"]["conf"]
    assert ("ssl_preread on;" in conf) == (options.get("alpn", True))
    assert ("listen [::]:80 default_server;" in conf) == ipv6


def test_nginx_test_can_fail(tmp_path):
    result = discovery(tmp_path, paths=local_paths(tmp_path))
    # without the stream module loaded, Debian's nginx does not know the stream block
    checked = nginx_test(result["nginx"]["conf"], tmp_path)
    assert checked.returncode != 0 and "stream" in checked.stderr


def test_alpn_routes(tmp_path):
    stream = discovery(tmp_path)["nginx"]["streamConfig"]
    assert "~\\bimap\\b 993;" in stream
    assert "~\\bsmtp\\b 465;" in stream
    assert "default 8443;" in stream
    # a literal address: no resolver needed (test_gixy.py)
    assert "proxy_pass 127.0.0.1:$chatmail_alpn_port;" in stream


def test_one_default_server_per_listen_socket(tmp_path):
    for alpn in (True, False):
        servers = discovery(tmp_path, discovery={"alpn": alpn})["nginx"]["servers"]
        defaults: dict[tuple[str, int], list[str]] = {}
        for server in servers:
            for listen in server["listen"]:
                if server["default"]:
                    defaults.setdefault((listen["addr"], listen["port"]), []).append(server["name"])
        sockets = {(l["addr"], l["port"]) for s in servers for l in s["listen"]}
        assert sorted(defaults) == sorted(sockets)
        assert all(len(names) == 1 for names in defaults.values()), defaults


def test_locations(tmp_path):
    servers = {s["name"]: s for s in discovery(tmp_path)["nginx"]["servers"]}
    main = servers[DOMAIN]["locations"]
    assert "proxy_pass http://127.0.0.1:3691;" in main["= /new"]
    # relay-to-relay mail over HTTPS: upstream's route, limited to max_message_size, and an SMTP
    # reply for a larger message as for every other refusal
    assert "proxy_pass http://127.0.0.1:10082;" in main["/mxdeliv"]
    assert "client_max_body_size 31457280;" in main["/mxdeliv"]
    assert "error_page 413 @mxdeliv-too-large;" in main["/mxdeliv"]
    assert '"552 5.3.4 Message size exceeds fixed limit\\n"' in main["@mxdeliv-too-large"]
    assert "= /.well-known/autoconfig/mail/config-v1.1.xml" in main
    autoconfig = servers[f"autoconfig.{DOMAIN}"]["locations"]["= /mail/config-v1.1.xml"]
    assert "/.well-known/autoconfig/mail/config-v1.1.xml" in autoconfig
    assert "= /.well-known/mta-sts.txt" in servers[f"mta-sts.{DOMAIN}"]["locations"]
    http = servers[f"{DOMAIN}-http"]
    assert [listen["port"] for listen in http["listen"]] == [80, 80]
    assert "return 301 https://" in http["locations"]["/"]
    assert "/var/lib/acme/acme-challenge" in http["locations"]["/.well-known/acme-challenge/"]


def opendkim_check(conf_text: str, directory: Path) -> subprocess.CompletedProcess[str]:
    conf = directory / "opendkim.conf"
    conf.write_text(conf_text)
    return subprocess.run(
        ["opendkim", "-n", "-x", str(conf)], capture_output=True, text=True, timeout=TOOL_TIMEOUT
    )


def test_debian_opendkim_accepts_config(safe_dir):
    result = discovery(safe_dir, discovery={"dkimSelector": "sel2026"}, paths=local_paths(safe_dir))
    subprocess.run(
        ["opendkim-genkey", "-D", str(safe_dir / "keys"), "-s", "sel2026", "-d", DOMAIN],
        check=True, timeout=TOOL_TIMEOUT,
    )
    assert result["opendkim"]["keyFile"] == str(safe_dir / "keys" / "sel2026.private")
    checked = opendkim_check(result["opendkim"]["conf"], safe_dir)
    assert checked.returncode == 0, checked.stderr + checked.stdout
    # and it can fail: the key file is missing
    (safe_dir / "keys" / "sel2026.private").unlink()
    assert opendkim_check(result["opendkim"]["conf"], safe_dir).returncode != 0


def test_opendkim_signs_submissions_and_notices_and_filtermail_verifies(tmp_path):
    result = render({"domain": DOMAIN}, tmp_path)
    master, main = result["postfixMaster"], result["postfixMain"]
    socket = "unix:/run/opendkim/opendkim.sock"
    for service in ("submission", "submissions"):
        # after filtermail: only what it let through gets signed
        assert f"smtpd_milters=unix:/run/filtermail/outgoing.sock,{socket}" in master[service]["args"]
        assert "milter_macro_daemon_name=ORIGINATING" in master[service]["args"]
    assert socket not in " ".join(master["smtp_inet"]["args"])
    # bounces and postmaster notices (upstream 1.11 signs bounces)
    assert main["non_smtpd_milters"] == [socket]
    assert main["internal_mail_filter_classes"] == ["bounce", "notify"]
    assert main["milter_macro_daemon_name"] == "ORIGINATING"
    settings = result["discovery"]["opendkim"]["settings"]
    assert settings["MTA"] == "ORIGINATING" and settings["Mode"] == "s"
    assert "incoming-milter" in result["daemons"]["filtermail-incoming"]
    assert "--skip-dkim" not in result["daemons"]["filtermail-incoming"]


def test_submission_header_privacy(tmp_path):
    checks = render({"domain": DOMAIN}, tmp_path)["postfixMain"]["mua_header_checks"]
    for header in ("Received", "X-Originating-IP", "X-Mailer", "User-Agent"):
        assert f"/^{header}:/ IGNORE" in checks
    # DKIM and threading headers stay
    for header in ("DKIM", "Message-ID", "In-Reply-To", "References", "Autocrypt"):
        assert header not in checks


def test_newemail_command_line(tmp_path):
    result = discovery(tmp_path, discovery={"newemailPort": 4001}, paths={"binDir": "/b"})
    assert result["newemail"] == [
        "/b/chatmail-newemail", "/etc/chatmail/chatmail.ini", "--listen", "127.0.0.1:4001",
        "--self-signed",  # a domain starting with "_", as upstream
    ]
    result = discovery(tmp_path, discovery={"selfSigned": False})
    assert result["newemail"][-1] == "127.0.0.1:3691"


def test_dkim_off_removes_opendkim_and_the_dkim_check(tmp_path):
    result = render({"domain": DOMAIN, "discovery": {"dkim": False}}, tmp_path)
    assert not any("opendkim" in arg for entry in result["postfixMaster"].values()
                   for arg in entry.get("args", []))
    assert result["postfixMain"]["non_smtpd_milters"] == []
    assert result["daemons"]["filtermail-incoming"][-1] == "--skip-dkim"
