#!/usr/bin/env python3
"""Client side of the discovery and deliverability tests: run inside the harness's client namespace.

    local-relay exec -- VENV/bin/python tests/harness/discovery_client.py CHECK ARGS... --ca CA

Each check prints its findings as one JSON object on the last line of its output; the pytest side
(tests/harness/test_discovery.py) judges them. Checks:

deltachat DOMAIN      configure a Delta Chat core account from address and password only
newemail DOMAIN       POST https://DOMAIN/new, log in over IMAP with what it returned; GET /new
alpn DOMAIN           TLS to DOMAIN:443 with ALPN "imap", "smtp" and "http/1.1"
qr DOMAIN             the QR code image the index page shows, as served
dkim SENDER RECIPIENT a submitted mail from relay SENDER as delivered at relay RECIPIENT
unsigned SENDER RECIPIENT  an encrypted mail from a SENDER address, unsigned, to RECIPIENT's port 25
"""

from __future__ import annotations

import argparse
import hashlib
import json
import smtplib
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "nixos-tests" / "scenarios"))
import scenario_lib as lib  # noqa: E402

TIMEOUT = 30.0
# headers the receiving relay adds at delivery: dropped before the mail is sent there again


def deltachat(args: argparse.Namespace) -> dict:
    from deltachat_rpc_client import DeltaChat, Rpc

    credentials = lib.random_account(args.domain)
    rpc_server = str(Path(sys.executable).parent / "deltachat-rpc-server")
    with tempfile.TemporaryDirectory() as accounts_dir, \
            Rpc(accounts_dir=accounts_dir, rpc_server_path=rpc_server) as rpc:
        account = DeltaChat(rpc).add_account()
        started = time.monotonic()
        # address and password only: core finds the servers itself
        account.add_or_update_transport({"addr": credentials.addr,
                                         "password": credentials.password})
        seconds = time.monotonic() - started
        transports = account.list_transports()
    return {"addr": credentials.addr, "seconds": round(seconds, 2), "transports": transports}


def newemail(args: argparse.Namespace) -> dict:
    context = ssl.create_default_context(cafile=args.ca)
    url = f"https://{args.domain}/new"
    request = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(request, context=context, timeout=TIMEOUT) as response:
        credentials = json.loads(response.read())
    relay = lib.Relay(args.domain, args.ca)
    account = lib.Account(credentials["email"], credentials["password"])
    client = lib.imap_login(relay, account)
    capabilities = sorted(c.decode() for c in client.capabilities())
    client.logout()

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=context))
    try:
        opener.open(url, timeout=TIMEOUT)
        get = {"status": 200}
    except urllib.error.HTTPError as error:
        get = {"status": error.code, "location": error.headers.get("Location")}
    return {"credentials": credentials, "imap_login": True, "capabilities": capabilities,
            "get": get}


def qr_image(args: argparse.Namespace) -> dict:
    """The index page's QR code image as served: its content type and SHA-256."""
    context = ssl.create_default_context(cafile=args.ca)
    with urllib.request.urlopen(f"https://{args.domain}/", context=context,
                                timeout=TIMEOUT) as response:
        index = response.read().decode()
    source = index.split('<img src="', 1)[1].split('"', 1)[0]
    with urllib.request.urlopen(f"https://{args.domain}{source}", context=context,
                                timeout=TIMEOUT) as response:
        image = response.read()
        content_type = response.headers.get("Content-Type")
    return {"source": source, "content_type": content_type,
            "sha256": hashlib.sha256(image).hexdigest()}


def alpn_greeting(domain: str, ca: str | None, protocol: str) -> dict:
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols([protocol])
    with socket.create_connection((domain, 443), timeout=TIMEOUT) as raw, \
            context.wrap_socket(raw, server_hostname=domain) as tls:
        if protocol == "http/1.1":
            path = "/.well-known/autoconfig/mail/config-v1.1.xml"
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n"
                        .encode())
        data = tls.recv(200)
        return {"selected": tls.selected_alpn_protocol(), "greeting": data.decode(errors="replace")}


def alpn(args: argparse.Namespace) -> dict:
    return {protocol: alpn_greeting(args.domain, args.ca, protocol)
            for protocol in ("imap", "smtp", "http/1.1")}


def send_to_port_25(relay: lib.Relay, sender: str, recipient: str, message: bytes) -> dict:
    try:
        with lib.smtp_connect(relay, 25) as client:
            client.sendmail(sender, [recipient], message)
        return {"code": 250}
    except smtplib.SMTPDataError as error:
        return {"code": error.smtp_code, "reply": error.smtp_error.decode(errors="replace")}


def dkim(args: argparse.Namespace) -> dict:
    """A mail from SENDER's relay to RECIPIENT's, as delivered (RECIPIENT's relay takes no mail
    without a valid DKIM signature of the From domain)."""
    sending = lib.Relay(args.sender_domain, args.ca, args.helo)
    receiving = lib.Relay(args.recipient_domain, args.ca, args.helo)
    sender, recipient = lib.create_account(sending), lib.create_account(receiving)
    message = lib.encrypted_message(sender.addr, [recipient.addr])
    lib.submit(sending, sender, [recipient.addr], message)
    delivered = lib.wait_for_message(receiving, recipient, lib.message_id(message))
    return {
        "sender": sender.addr,
        "recipient": recipient.addr,
        "delivered_headers": delivered.partition(b"\r\n\r\n")[0].decode(errors="replace"),
    }


def unsigned(args: argparse.Namespace) -> dict:
    """An encrypted mail 'from' SENDER's domain sent straight to RECIPIENT's port 25, unsigned."""
    receiving = lib.Relay(args.recipient_domain, args.ca, args.helo)
    recipient = lib.create_account(receiving)
    sender = lib.random_account(args.sender_domain)
    message = lib.encrypted_message(sender.addr, [recipient.addr])
    return send_to_port_25(receiving, sender.addr, recipient.addr, message)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    lib.relay_arguments(parser)
    checks = parser.add_subparsers(dest="check", required=True)
    for name, handler in (("deltachat", deltachat), ("newemail", newemail), ("alpn", alpn),
                          ("qr", qr_image)):
        sub = checks.add_parser(name)
        sub.add_argument("domain")
        sub.set_defaults(handler=handler)
    for name, handler in (("dkim", dkim), ("unsigned", unsigned)):
        sub = checks.add_parser(name)
        sub.add_argument("sender_domain")
        sub.add_argument("recipient_domain")
        sub.set_defaults(handler=handler)
    args = parser.parse_args()
    print(json.dumps(args.handler(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
