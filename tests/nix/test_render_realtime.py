"""render-realtime.nix: TURN (coturn settings, turnserver.conf, the credentials daemon) and the iroh
relay (config, nginx routes, what chatmail.ini advertises), rendered offline; the routes pass
Debian's `nginx -t`. The harness runs the TURN part in real coturn (tests/harness/test_realtime.py);
the iroh routes are exercised by the VM test nixos-tests/realtime.nix."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from nix_tools import render
from test_render_discovery import DEBIAN_NGINX_MODULES, local_paths, nginx_test

DOMAIN = "_r1.test"
IROH_ROUTES = {"/relay", "= /ping", "= /generate_204"}


def site_locations(result: dict) -> dict[str, str]:
    return next(s for s in result["discovery"]["nginx"]["servers"] if s["name"] == DOMAIN)["locations"]


def ini(result: dict) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(result["chatmailIni"])
    return dict(parser["params"])


def test_iroh_relay_is_advertised_and_routed_only_when_served(tmp_path):
    served = render({"domain": DOMAIN, "irohRelay": {"enable": True, "port": 3999}}, tmp_path)
    assert ini(served)["iroh_relay"] == f"https://{DOMAIN}"
    locations = site_locations(served)
    assert IROH_ROUTES <= set(locations)
    for route in IROH_ROUTES:
        assert "proxy_pass http://127.0.0.1:3999;" in locations[route]
    assert "proxy_set_header Upgrade $http_upgrade;" in locations["/relay"]
    assert 'http_bind_addr = "127.0.0.1:3999"' in served["realtime"]["irohRelay"]["toml"]

    default = render({"domain": DOMAIN}, tmp_path)
    assert ini(default)["iroh_relay"] == ""  # chatmail-metadata then answers NIL
    assert not IROH_ROUTES & set(site_locations(default))
    # an explicit one (another relay's) is advertised as given
    other = render({"domain": DOMAIN, "settings": {"iroh_relay": "https://iroh.example.org"}}, tmp_path)
    assert ini(other)["iroh_relay"] == "https://iroh.example.org"


@pytest.mark.parametrize("iroh", [True, False])
def test_debian_nginx_accepts_the_iroh_routes(tmp_path, iroh):
    result = render({"domain": DOMAIN, "irohRelay": {"enable": iroh},
                     "discovery": {"nginxModulesDir": DEBIAN_NGINX_MODULES},
                     "paths": local_paths(tmp_path)}, tmp_path)
    checked = nginx_test(result["discovery"]["nginx"]["conf"], tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert ("location /relay {" in result["discovery"]["nginx"]["conf"]) == iroh


def test_turn_server_configuration(tmp_path):
    result = render({"domain": DOMAIN, "turn": {"minPort": 50000, "maxPort": 50100,
                                                "allowedPeers": ["198.18.0.0-198.18.0.255"]}}, tmp_path)
    turn = result["realtime"]["turn"]
    assert turn["enable"] and turn["port"] == 3478
    coturn = turn["coturn"]
    assert (coturn["realm"], coturn["listening-port"], coturn["min-port"], coturn["max-port"]) == (
        DOMAIN, 3478, 50000, 50100)
    assert coturn["use-auth-secret"] and coturn["no-tcp-relay"] and coturn["no-cli"]
    conf = turn["conf"].splitlines()
    assert "static-auth-secret=#static-auth-secret#" in conf and "use-auth-secret" in conf
    # loopback and private ranges are never relayed to, except what is allowed explicitly
    assert "denied-peer-ip=127.0.0.0-127.255.255.255" in conf and "denied-peer-ip=::1" in conf
    assert "denied-peer-ip=10.0.0.0-10.255.255.255" in conf
    assert "allowed-peer-ip=198.18.0.0-198.18.0.255" in conf
    assert ini(result)["turn_socket_path"] == "/run/chatmail-turn/turn.socket"
    assert result["daemons"]["turn-credentials"][1:] == [
        "/run/chatmail-turn/turn.socket", "--secret-file", "/var/lib/chatmail-turn/static-auth-secret",
        "--lifetime", "432000"]


def test_turn_off_removes_the_credentials_daemon(tmp_path):
    result = render({"domain": DOMAIN, "turn": {"enable": False}}, tmp_path)
    assert "turn-credentials" not in result["daemons"]
    assert "chatmail-turn-credentials" not in result["systemdUnits"]
    # the ini key stays (upstream's default path); metadata answers NIL when nothing listens
    assert ini(result)["turn_socket_path"] == "/run/chatmail-turn/turn.socket"


def test_turn_socket_path_comes_from_paths_only(tmp_path):
    result = render({"domain": DOMAIN, "paths": {"turnSocket": "/run/x/t.sock"}}, tmp_path)
    assert ini(result)["turn_socket_path"] == "/run/x/t.sock"
    assert result["daemons"]["turn-credentials"][1] == "/run/x/t.sock"
    with pytest.raises(Exception, match="turn_socket_path is not accepted"):
        render({"domain": DOMAIN, "settings": {"turn_socket_path": "/x"}}, tmp_path)


def test_pages_escape_operator_values(tmp_path):
    www = render({"domain": DOMAIN, "settings": {"privacy_postal": "<b>A & B</b>\nStreet 1",
                                                  "privacy_mail": "p@x.org"}}, tmp_path)["discovery"]["www"]
    assert "&lt;b&gt;A &amp; B&lt;/b&gt;<br>\nStreet 1" in www["privacy.html"]
    assert "<b>" not in www["privacy.html"] and "p@x.org" in www["info.html"]
    assert "(not given: settings.privacy_pdo)" in www["privacy.html"]
    assert "TURN server" in www["info.html"] and "iroh relay" not in www["info.html"]
