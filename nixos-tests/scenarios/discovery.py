#!/usr/bin/env python3
"""What a relay publishes over HTTPS, fetched as clients fetch it, with verified TLS:

    python3 discovery.py --domain DOMAIN [--ca CAFILE]

- the autoconfig file at https://DOMAIN/.well-known/autoconfig/mail/config-v1.1.xml and at
  https://autoconfig.DOMAIN/mail/config-v1.1.xml, equal to chatmaild's reference rendering;
- the MTA-STS policy at https://mta-sts.DOMAIN/.well-known/mta-sts.txt;
- POST https://DOMAIN/new: fresh credentials that log in over IMAP.

The autoconfig and mta-sts host names are reached at DOMAIN's address (the caller's DNS or hosts
file need not know them); TLS is verified for each name, as a client would.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys

import scenario_lib as lib
from chatmaild.autoconfig import render_autoconfig, render_mta_sts_policy


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to HOST (SNI, Host header, certificate name) over a TCP connection to ADDRESS."""

    def __init__(self, host: str, address: str, relay: lib.Relay) -> None:
        super().__init__(host, 443, timeout=lib.NETWORK_TIMEOUT, context=relay.tls())
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def fetch(relay: lib.Relay, host: str, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    address = socket.getaddrinfo(relay.domain, 443, type=socket.SOCK_STREAM)[0][4][0]
    connection = PinnedHTTPSConnection(host, address, relay)
    try:
        connection.request(method, path, body=b"" if method == "POST" else None)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def check_document(relay: lib.Relay, host: str, path: str, expected: str) -> None:
    status, content_type, body = fetch(relay, host, path)
    url = f"https://{host}{path}"
    lib.check(status == 200, f"{url}: HTTP {status}")
    lib.check(body.decode() == expected, f"{url} differs from chatmaild's rendering:\n{body!r}")
    lib.step(f"{url}: as rendered ({content_type})")


def steps(relay: lib.Relay) -> None:
    domain = relay.domain
    autoconfig = render_autoconfig(domain)
    check_document(relay, domain, "/.well-known/autoconfig/mail/config-v1.1.xml", autoconfig)
    check_document(relay, f"autoconfig.{domain}", "/mail/config-v1.1.xml", autoconfig)
    check_document(relay, f"mta-sts.{domain}", "/.well-known/mta-sts.txt",
                   render_mta_sts_policy(domain))
    status, _, body = fetch(relay, domain, "/new", method="POST")
    lib.check(status == 200, f"POST https://{domain}/new: HTTP {status} {body[:200]!r}")
    credentials = json.loads(body)
    account = lib.Account(credentials["email"], credentials["password"])
    lib.check(account.addr.endswith(f"@{domain}"), f"/new gave an address of another domain: {account.addr}")
    lib.imap_login(relay, account).logout()
    lib.step(f"POST /new gave {account.addr}, which logs in over IMAP")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", required=True, help="the relay's mail domain (also its host)")
    lib.relay_arguments(parser)
    args = parser.parse_args()
    relay = lib.Relay(args.domain, args.ca, args.helo)
    return lib.run_scenario(f"discovery {args.domain}", lambda: steps(relay))


if __name__ == "__main__":
    sys.exit(main())
