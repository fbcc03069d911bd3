"""modules/realtime.nix evaluated with nixpkgs' module system against ./stubs (needs NIXPKGS_LIB, as
test_module.py): coturn from render.nix's settings with the secret as a systemd credential, the
secret generated once, chatmail-turn-credentials, iroh-relay behind nginx, and what is refused."""

from __future__ import annotations

import pytest

from test_module import (  # noqa: F401 (dovecot_generation: the autouse fixture)
    NIXPKGS_LIB,
    dovecot_generation,
    evaluate,
    failed_assertions,
    relay,
)

pytestmark = pytest.mark.skipif(NIXPKGS_LIB is None, reason="set NIXPKGS_LIB")


def test_turn_defaults(tmp_path):
    summary = evaluate(relay(), tmp_path)
    coturn = summary["coturn"]
    assert coturn["enable"] and coturn["use-auth-secret"] and coturn["realm"] == "chat.example.org"
    assert coturn["static-auth-secret-file"] == "/run/credentials/coturn.service/turn-secret"
    assert "denied-peer-ip=127.0.0.0-127.255.255.255" in coturn["extraConfig"]
    services = summary["services"]
    secret = "turn-secret:/var/lib/chatmail-turn/static-auth-secret"
    assert services["coturn"]["serviceConfig"]["LoadCredential"] == [secret]
    assert "chatmail-turn-secret.service" in services["coturn"]["after"]
    generate = services["chatmail-turn-secret"]
    assert generate["serviceConfig"]["Type"] == "oneshot" and "/dev/urandom" in generate["script"]
    credentials = services["chatmail-turn-credentials"]
    assert credentials["serviceConfig"]["LoadCredential"] == [secret]
    assert "--secret-file %d/turn-secret" in credentials["serviceConfig"]["ExecStart"]
    assert "chatmail-metadata.service" in credentials["before"]
    assert "turn_socket_path = /run/chatmail-turn/turn.socket\n" in summary["etc"]["chatmail/chatmail.ini"]


def test_turn_secret_from_a_file(tmp_path):
    summary = evaluate(relay(turn={"staticAuthSecretFile": "/run/secrets/turn"}), tmp_path)
    services = summary["services"]
    assert "chatmail-turn-secret" not in services
    assert services["coturn"]["serviceConfig"]["LoadCredential"] == ["turn-secret:/run/secrets/turn"]
    assert services["chatmail-turn-credentials"]["serviceConfig"]["LoadCredential"] == [
        "turn-secret:/run/secrets/turn"]


def test_turn_off(tmp_path):
    summary = evaluate(relay(turn={"enable": False}, openFirewall=True), tmp_path)
    assert not summary["coturn"]["enable"]
    assert "chatmail-turn-credentials" not in summary["services"]
    assert 3478 not in summary["firewallPorts"] and summary["firewallUdp"]["ports"] == []


def test_iroh_relay_served_and_advertised(tmp_path):
    summary = evaluate(relay(), tmp_path)
    service = summary["services"]["iroh-relay"]
    assert service["serviceConfig"]["ExecStart"].endswith(
        "-iroh-relay-0.35.0/bin/iroh-relay --config-path /etc/chatmail/iroh-relay.toml")
    assert service["serviceConfig"]["DynamicUser"] is True
    assert 'http_bind_addr = "127.0.0.1:3340"' in summary["etc"]["chatmail/iroh-relay.toml"]
    assert "iroh_relay = https://chat.example.org\n" in summary["etc"]["chatmail/chatmail.ini"]
    locations = summary["nginx"]["virtualHosts"]["chat.example.org"]["locations"]
    assert "proxy_pass http://127.0.0.1:3340;" in locations["/relay"]["extraConfig"]


def test_iroh_relay_off_advertises_none(tmp_path):
    summary = evaluate(relay(irohRelay={"enable": False}), tmp_path)
    assert "iroh-relay" not in summary["services"]
    assert "iroh_relay = \n" in summary["etc"]["chatmail/chatmail.ini"]
    assert "/relay" not in summary["nginx"]["virtualHosts"]["chat.example.org"]["locations"]


@pytest.mark.parametrize(("chatmail", "message"), [
    (relay(nginx={"enable": False}, irohRelay={"enable": True}),
     "services.chatmail.irohRelay.enable needs services.chatmail.nginx.enable"),
    (relay(turn={"minPort": 60000, "maxPort": 50000}), "services.chatmail.turn: minPort (60000)"),
    (relay(settings={"turn_socket_path": "/x"}), "services.chatmail.settings.turn_socket_path is not used"),
])
def test_bad_realtime_configurations_fail_with_a_message(tmp_path, chatmail, message):
    assert any(message in failure for failure in failed_assertions(chatmail, tmp_path))


def test_no_iroh_relay_without_nginx_by_default(tmp_path):
    summary = evaluate(relay(nginx={"enable": False}), tmp_path)
    assert "iroh-relay" not in summary["services"]
    assert "iroh_relay = \n" in summary["etc"]["chatmail/chatmail.ini"]
