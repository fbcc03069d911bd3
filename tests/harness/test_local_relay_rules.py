"""The pure rules of scripts/local-relay (no root, no daemons)."""

from __future__ import annotations

import pytest

from harness_lib import load_local_relay


lr = load_local_relay()


@pytest.mark.parametrize("name", ["chat.test", "_r1.test", "a-b.c_d.example", "x" * 63 + ".test"])
def test_valid_domains(name: str) -> None:
    assert lr.is_valid_domain(name)


@pytest.mark.parametrize("name", ["test", "-a.test", "a-.test", "a..test", "a b.test", "x" * 64 + ".test",
                                  "a.test/", ".test"])
def test_invalid_domains(name: str) -> None:
    assert not lr.is_valid_domain(name)


def test_default_domains() -> None:
    assert lr.relay_domains(None, None) == ["chat.test"]
    assert lr.relay_domains(2, None) == ["chat.test", "chat2.test"]
    assert lr.relay_domains(3, None)[2] == "chat3.test"


def test_given_domains() -> None:
    assert lr.relay_domains(None, "_A.test, b.test") == ["_a.test", "b.test"]
    with pytest.raises(lr.HarnessError, match="--relays 3"):
        lr.relay_domains(3, "a.test,b.test")
    with pytest.raises(lr.HarnessError, match="not a valid DNS name: bad"):
        lr.relay_domains(None, "a.test,bad")
    with pytest.raises(lr.HarnessError, match="distinct"):
        lr.relay_domains(None, "a.test,a.test")


def test_addresses_stay_in_the_test_range() -> None:
    assert lr.relay_address(0) == "198.18.0.11"
    assert lr.relay_address(1) == "198.18.0.12"
    assert lr.relay_address(200).startswith("198.18.0.")


def test_dnsmasq_sends_relay_names_to_named_only() -> None:
    options = lr.dnsmasq_options(["chat.test", "_r2.test"])
    assert options == ["--local=/#/", f"--server=/chat.test/127.0.0.1#{lr.NAMED_PORT}",
                       f"--server=/_r2.test/127.0.0.1#{lr.NAMED_PORT}"]


def test_certificate_names_cover_what_clients_try() -> None:
    assert lr.certificate_names("_r1.test") == ["_r1.test", "imap._r1.test", "smtp._r1.test",
                                               "mail._r1.test", "autoconfig._r1.test",
                                               "mta-sts._r1.test", "www._r1.test"]


def test_hosts_file_maps_the_host_name() -> None:
    text = lr.hosts_file("198.18.0.2", ["client.test", "vm"])
    assert "198.18.0.2\tclient.test vm\n" in text
    assert text.startswith("127.0.0.1\tlocalhost\n")


def test_prefix_choice() -> None:
    assert lr.pick_prefix(None, set()) == "cm-"
    other = lr.pick_prefix(None, {"cm-hub"})
    assert other.startswith("cm") and other.endswith("-") and other != "cm-"
    assert lr.pick_prefix("t1-", {"cm-hub"}) == "t1-"
    with pytest.raises(lr.HarnessError):
        lr.pick_prefix("Bad_Prefix", set())


def test_settings_from_the_command_line() -> None:
    assert lr.parse_settings(["max_mailbox_size=100K", "max_user_send_burst_size=3",
                              "passthrough_senders=[\"a@b.test\"]", "imap_rawlog=true"]) == {
        "max_mailbox_size": "100K", "max_user_send_burst_size": 3,
        "passthrough_senders": ["a@b.test"], "imap_rawlog": True}
    for bad in ("max_mailbox_size", "=1", "Bad-Key=1"):
        with pytest.raises(lr.HarnessError):
            lr.parse_settings([bad])


def test_push_notifications_go_to_the_client_namespace() -> None:
    assert lr.DEFAULT_NOTIFY_URL.startswith(f"http://{lr.CLIENT_ADDRESS}:")
