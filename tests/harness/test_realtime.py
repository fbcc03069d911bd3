"""Calls, realtime and the web pages on the local relays: TURN credentials over IMAP metadata and an
allocation on the relay's coturn with them, no iroh relay advertised where none runs, the dclogin:
URL of a self-signed relay configuring Delta Chat core, /new's rate limit there, and the privacy
and info pages from the privacy_* settings.

The client side runs in the client namespace (tests/harness/realtime_client.py, turn_client.py)
and reports JSON."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest

from chatmaild.newemail import dclogin_url
from harness_lib import PRIVACY_SETTINGS, SCENARIOS, LocalRelays

HERE = Path(__file__).resolve().parent
CLIENT, TURN_CLIENT = HERE / "realtime_client.py", HERE / "turn_client.py"
CLIENT_ADDRESS = "198.18.0.2"  # the harness's client namespace
SELF_SIGNED = "_r3.test"  # a "_" domain: upstream's self-signed mode


def client_json(relays: LocalRelays, script: Path, *args: str) -> dict:
    result = relays.run_client(script, *args)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def check(relays: LocalRelays, *args: str) -> dict:
    return client_json(relays, CLIENT, "--ca", relays.ca, *args)


def allocate(relays: LocalRelays, server: str, username: str, password: str, *extra: str) -> dict:
    return client_json(relays, TURN_CLIENT, "allocate", "--server", server, "--username", username,
                       "--password", password, *extra)


@pytest.fixture(scope="module")
def turn_metadata(relays: LocalRelays) -> dict:
    return check(relays, "metadata", "chat.test")


def test_turn_credentials_from_imap_metadata_are_upstreams_format(turn_metadata: dict) -> None:
    host, port, username, password = turn_metadata["turn"].split(":")
    assert (host, port) == ("chat.test", "3478") and username.isdigit() and password


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_turn_credentials_allocate_a_relayed_address(relays: LocalRelays, turn_metadata: dict,
                                                      transport: str) -> None:
    _, _, username, password = turn_metadata["turn"].split(":")
    ipv4 = relays.relay("chat.test")["ipv4"]
    peer_port = 40000 if transport == "udp" else 40001
    found = allocate(relays, "chat.test", username, password,
                     *(["--tcp"] if transport == "tcp" else []),
                     "--peer", f"{CLIENT_ADDRESS}:{peer_port}", "--forbidden-peer", "127.0.0.1:10025")
    result = found["allocate"]
    assert (result["status"], result["realm"], result["integrity"]) == (200, "chat.test", True), found
    assert result["relayed"][0] == ipv4 and 49152 <= result["relayed"][1] <= 65535
    # data goes through the relay both ways
    peer = found["peer"]
    assert peer["peer_received"] == "ping through the relay" and peer["peer_saw_source"] == result["relayed"]
    assert peer["client_received"] == "pong from the peer"
    # never into the relay's own loopback (Postfix's mynetworks trusts 127.0.0.1)
    assert found["forbidden_peer"]["status"] == 403, found


def test_turn_refuses_wrong_or_expired_credentials(relays: LocalRelays, turn_metadata: dict) -> None:
    _, _, username, password = turn_metadata["turn"].split(":")
    wrong = allocate(relays, "chat.test", username, password[::-1])["allocate"]
    expired = allocate(relays, "chat.test", "1000", password)["allocate"]
    assert wrong["status"] == 401 and expired["status"] == 401, (wrong, expired)


def test_no_iroh_relay_is_advertised_where_none_runs(relays: LocalRelays, turn_metadata: dict) -> None:
    # no registry ships an iroh-relay binary: the harness serves none, so none is advertised
    assert turn_metadata["irohrelay"] is None
    # the VM test realtime runs the same scenario with an iroh relay served
    result = relays.run_client(SCENARIOS / "realtime.py", "--domain", "chat.test", "--ca", relays.ca)
    assert result.returncode == 0 and "no iroh relay advertised or routed" in result.stdout, result.stdout


def test_dclogin_url_of_a_self_signed_relay_configures_delta_chat(relays: LocalRelays) -> None:
    found = check(relays, "newemail-burst", SELF_SIGNED, "1")
    credentials = found["credentials"]
    assert found["statuses"] == [200] and credentials["dclogin_url"].endswith("&v=1&ic=3")
    assert credentials["dclogin_url"] == dclogin_url(credentials["email"], credentials["password"])
    configured = check(relays, "dclogin", credentials["dclogin_url"])
    assert configured["configured"] and configured["addr"] == credentials["email"], configured


def test_dclogin_url_accepts_a_certificate_delta_chat_does_not_trust(relays: LocalRelays) -> None:
    # chat.test's certificate comes from the harness CA, which core does not trust: the same URL
    # without ic=3 fails, with it Delta Chat configures the account
    email = f"dc{secrets.token_hex(4)[:7]}@chat.test"  # a new 9-character address
    url = dclogin_url(email, secrets.token_urlsafe(12))
    refused = check(relays, "dclogin", url.removesuffix("&ic=3"))
    assert not refused["configured"], refused
    configured = check(relays, "dclogin", url)
    assert configured["configured"] and configured["addr"] == email, configured


def test_new_is_rate_limited_on_a_self_signed_relay(relays: LocalRelays) -> None:
    # 2 requests a second per address, bursts of 5 (upstream's nginx limit); 503 beyond
    statuses = check(relays, "newemail-burst", SELF_SIGNED, "20")["statuses"]
    assert statuses.count(200) >= 5 and set(statuses) == {200, 503}, statuses


def test_index_page_of_a_self_signed_relay_fetches_its_dclogin_link(relays: LocalRelays) -> None:
    pages = check(relays, "get", SELF_SIGNED, "/", "/dclogin.js")
    assert '<script src="/dclogin.js">' in pages["/"]["body"]
    assert pages["/dclogin.js"]["status"] == 200 and "dclogin_url" in pages["/dclogin.js"]["body"]


def test_privacy_and_info_pages_show_the_privacy_settings(relays: LocalRelays) -> None:
    pages = check(relays, "get", "chat.test", "/privacy.html", "/info.html")
    privacy, info = pages["/privacy.html"], pages["/info.html"]
    assert privacy["status"] == info["status"] == 200
    assert privacy["content_type"].startswith("text/html")
    postal = PRIVACY_SETTINGS["privacy_postal"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert postal in privacy["body"] and PRIVACY_SETTINGS["privacy_mail"] in privacy["body"]
    assert PRIVACY_SETTINGS["privacy_mail"] in info["body"]
    assert "(not given: settings.privacy_supervisor)" in privacy["body"]  # no value, no silence
    # the services that run, and only those: TURN yes, iroh relay no
    assert "TURN server" in info["body"] and "iroh relay" not in info["body"]
    assert re.search(r"up to 60 messages per minute", info["body"])
