"""The autoconfig document and MTA-STS policy, read back the way clients read them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from chatmaild.autoconfig import MTA_STS_MAX_AGE, render_autoconfig, render_mta_sts_policy

DOMAIN = "chat.example.org"


def servers(xml_text: str) -> list[tuple[str, str, str, int, str, str, str]]:
    """(element, type, hostname, port, socketType, authentication, username) of every server."""
    provider = ET.fromstring(xml_text).find("emailProvider")
    assert provider is not None
    return [
        (
            server.tag,
            server.get("type"),
            server.findtext("hostname"),
            int(server.findtext("port")),
            server.findtext("socketType"),
            server.findtext("authentication"),
            server.findtext("username"),
        )
        for server in provider
        if server.tag in ("incomingServer", "outgoingServer")
    ]


def test_autoconfig_lists_upstreams_servers_in_order():
    xml_text = render_autoconfig(DOMAIN)
    assert xml_text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    login = ("password-cleartext", "%EMAILADDRESS%")
    assert servers(xml_text) == [
        ("incomingServer", "imap", DOMAIN, 993, "SSL", *login),
        ("incomingServer", "imap", DOMAIN, 143, "STARTTLS", *login),
        ("incomingServer", "imap", DOMAIN, 443, "SSL", *login),
        ("outgoingServer", "smtp", DOMAIN, 465, "SSL", *login),
        ("outgoingServer", "smtp", DOMAIN, 587, "STARTTLS", *login),
        ("outgoingServer", "smtp", DOMAIN, 443, "SSL", *login),
    ]


def test_autoconfig_names_the_provider():
    root = ET.fromstring(render_autoconfig(DOMAIN))
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider.get("id") == DOMAIN
    assert provider.findtext("domain") == DOMAIN
    assert provider.findtext("displayName") == f"{DOMAIN} chatmail"
    assert provider.findtext("displayShortName") == DOMAIN


def test_autoconfig_without_alpn_multiplexing_lists_only_the_mail_ports():
    ports = [(s[1], s[3], s[4]) for s in servers(render_autoconfig(DOMAIN, alpn_port_443=False))]
    assert ports == [
        ("imap", 993, "SSL"),
        ("imap", 143, "STARTTLS"),
        ("smtp", 465, "SSL"),
        ("smtp", 587, "STARTTLS"),
    ]


@pytest.mark.parametrize("domain", ["_r1.test", "a-b.example"])
def test_autoconfig_hostnames_follow_the_domain(domain: str):
    assert {s[2] for s in servers(render_autoconfig(domain))} == {domain}


def test_mta_sts_policy_enforces_tls_to_the_domain_itself():
    text = render_mta_sts_policy(DOMAIN)
    assert text.endswith("\n")
    fields = dict(line.split(": ", 1) for line in text.splitlines())
    assert fields == {
        "version": "STSv1",
        "mode": "enforce",
        "mx": DOMAIN,
        "max_age": str(MTA_STS_MAX_AGE),
    }
    assert 86400 <= MTA_STS_MAX_AGE <= 31557600  # RFC 8461 bounds (upstream: four weeks)
