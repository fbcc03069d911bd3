"""The metrics endpoint of each relay (relays.json's metrics_url, inside the relay's namespace):
mail sent through the relays moves upstream's counters and Dovecot's own."""

from __future__ import annotations

import time

from harness_lib import SCENARIOS, LocalRelays, scrape_metrics

TIMEOUT = 20.0

def scrape(relays: LocalRelays, domain: str) -> dict[str, float]:
    relay = relays.relay(domain)
    return scrape_metrics(relay["netns"], relay["metrics_url"])


def wait_for_growth(relays: LocalRelays, domain: str, before: dict[str, float],
                    expected: dict[str, int]) -> dict[str, float]:
    """Scrape until every counter in EXPECTED grew by at least its amount (the log is read every
    half second)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        now = scrape(relays, domain)
        short = {name: now.get(name, 0) - before.get(name, 0) for name, amount in expected.items()
                 if now.get(name, 0) - before.get(name, 0) < amount}
        if not short:
            return now
        assert time.monotonic() < deadline, f"{domain}: counters grew only by {short}, expected {expected}"
        time.sleep(0.3)


def test_every_relay_lists_its_endpoint_and_serves_it(relays: LocalRelays) -> None:
    for relay in relays.description["relays"]:
        assert relay["metrics_url"] == "http://127.0.0.1:3903/metrics", relay
        values = scrape(relays, relay["domain"])
        assert values["dovecot_stats_up"] == 1
        assert "delivered_mail" in values and "dovecot_build_info{" in "".join(values)


def test_mail_moves_the_counters(relays: LocalRelays) -> None:
    before = {domain: scrape(relays, domain) for domain in ("chat.test", "chat2.test")}
    # two accounts, encrypted mail both ways on 587 and 465, cleartext refused, a forged sender
    result = relays.run_client(SCENARIOS / "basic.py", "--domain", "chat.test", "--ca", relays.ca)
    assert result.returncode == 0, result.stdout + result.stderr
    after = wait_for_growth(relays, "chat.test", before["chat.test"], {
        "created_accounts": 2, "created_nonci_accounts": 2,
        "delivered_mail": 2, "dovecot_mail_deliveries_total": 2,
        "filtered_outgoing_mail_count": 2, "outgoing_encrypted_mail_count": 2, "dkim_signed": 2,
        "rejected_unencrypted_mail_count": 1, "postfix_rejects": 2,
        'dovecot_auth_requests_total{success="yes"}': 2,
    })
    # nothing was refused for want of resources, nothing came in from outside
    for name in ("rejected_registrations", "incoming_encrypted_mail_count", "quota_exceeded"):
        assert after[name] == before["chat.test"][name], name

    result = relays.run_client(SCENARIOS / "federation.py", "--from", "chat.test", "--to", "chat2.test",
                               "--ca", relays.ca)
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for_growth(relays, "chat2.test", before["chat2.test"], {
        "incoming_encrypted_mail_count": 1, "filtered_incoming_mail_count": 1, "delivered_mail": 1,
        "outgoing_encrypted_mail_count": 1, "dkim_signed": 1,
    })
