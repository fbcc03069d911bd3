"""What a relay publishes over HTTPS so that clients and other mail servers find it.

- ``https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml``: the Thunderbird autoconfig
  document Delta Chat reads to learn the IMAP and SMTP servers of a domain;
- ``https://mta-sts.<domain>/.well-known/mta-sts.txt``: the MTA-STS policy (RFC 8461) telling
  sending servers to deliver only over verified TLS.

These are the reference renderings: the Nix module templates the same documents, and its tests
compare against these functions.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

# RFC 8461 allows at most 31557600 s; upstream publishes four weeks
MTA_STS_MAX_AGE = 2419200


@dataclass(frozen=True)
class MailServer:
    """One way of reaching the relay, as autoconfig lists it."""

    protocol: str  # "imap" (incomingServer) or "smtp" (outgoingServer)
    port: int
    socket_type: str  # "SSL" (implicit TLS) or "STARTTLS"


# In upstream's order, which is the order clients try them in.
_DIRECT_SERVERS = (
    MailServer("imap", 993, "SSL"),
    MailServer("imap", 143, "STARTTLS"),
    MailServer("smtp", 465, "SSL"),
    MailServer("smtp", 587, "STARTTLS"),
)
# Port 443 reaches IMAP and SMTP only where nginx multiplexes it by TLS ALPN ("imap"/"smtp"),
# as upstream does for networks that block the mail ports.
_ALPN_SERVERS = (
    MailServer("imap", 443, "SSL"),
    MailServer("smtp", 443, "SSL"),
)


def mail_servers(alpn_port_443: bool = True) -> list[MailServer]:
    """The servers autoconfig advertises: IMAP ones first, each protocol's port 443 entry last."""
    servers = list(_DIRECT_SERVERS) + (list(_ALPN_SERVERS) if alpn_port_443 else [])
    return sorted(
        servers, key=lambda s: s.protocol != "imap"
    )  # stable: keeps order within a protocol


def render_autoconfig(mail_domain: str, alpn_port_443: bool = True) -> str:
    """The autoconfig document (config-v1.1.xml) for ``mail_domain``.

    Every server is the relay itself, authenticated with the full address and its password.
    """
    client_config = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(client_config, "emailProvider", id=mail_domain)
    ET.SubElement(provider, "domain").text = mail_domain
    ET.SubElement(provider, "displayName").text = f"{mail_domain} chatmail"
    ET.SubElement(provider, "displayShortName").text = mail_domain
    for server in mail_servers(alpn_port_443):
        tag = "incomingServer" if server.protocol == "imap" else "outgoingServer"
        element = ET.SubElement(provider, tag, type=server.protocol)
        ET.SubElement(element, "hostname").text = mail_domain
        ET.SubElement(element, "port").text = str(server.port)
        ET.SubElement(element, "socketType").text = server.socket_type
        ET.SubElement(element, "authentication").text = "password-cleartext"
        ET.SubElement(element, "username").text = "%EMAILADDRESS%"
    ET.indent(client_config)
    body = ET.tostring(client_config, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def render_mta_sts_policy(mail_domain: str) -> str:
    """The MTA-STS policy: enforce TLS for mail to ``mail_domain``, whose only MX is itself."""
    return f"version: STSv1\nmode: enforce\nmx: {mail_domain}\nmax_age: {MTA_STS_MAX_AGE}\n"
