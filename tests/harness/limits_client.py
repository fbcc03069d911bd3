#!/usr/bin/env python3
"""Client side of tests/harness/test_limits.py, run in the harness' client namespace; each command
prints one JSON object.

    limits_client.py smtp --domain D --ca CA --port P --connections N
        opens N connections to port P at once and keeps them; the reply each one got first
        (220, or 421 for a client over its connection count) and whether it completed EHLO.
    limits_client.py imap --domain D --ca CA --sessions N
        logs N new accounts in at once and keeps them logged in; which logins succeeded; then logs
        them out and logs one more in (it must succeed again).
    limits_client.py login --domain D --ca CA ADDR PASSWORD
        whether ADDR logs in with PASSWORD (a new address: whether it is created).
"""

from __future__ import annotations

import argparse
import json
import smtplib
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "nixos-tests" / "scenarios"))

import scenario_lib as lib  # noqa: E402


def smtp(relay: lib.Relay, port: int, connections: int) -> dict:
    replies, kept = [], []
    for _ in range(connections):
        try:
            if port == 465:  # TLS first, then the greeting
                client = smtplib.SMTP_SSL(relay.domain, port, local_hostname=socket.getfqdn(),
                                          context=relay.tls(), timeout=lib.NETWORK_TIMEOUT)
            else:
                client = smtplib.SMTP(relay.domain, port, local_hostname=socket.getfqdn(),
                                      timeout=lib.NETWORK_TIMEOUT)
        except smtplib.SMTPConnectError as error:
            replies.append([error.smtp_code, error.smtp_error.decode(errors="replace")])
            continue
        code, _ = client.ehlo()
        replies.append([220, f"EHLO {code}"])
        kept.append(client)
    for client in kept:
        client.quit()
    return {"replies": replies}


def login_works(relay: lib.Relay, account: lib.Account):
    """A logged-in IMAP client with INBOX selected, or the error's text."""
    try:
        client = lib.imap_login(relay, account)
        client.select_folder("INBOX")
        return client
    except Exception as error:  # refused (LoginError) or dropped (EOF): what the client sees
        return f"{type(error).__name__}: {error}"


def imap(relay: lib.Relay, sessions: int) -> dict:
    accounts = [lib.random_account(relay.domain) for _ in range(sessions)]
    results = [login_works(relay, account) for account in accounts]
    outcome = [r if isinstance(r, str) else "logged in" for r in results]
    for client in results:
        if not isinstance(client, str):
            client.logout()
    again = login_works(relay, accounts[0])
    if not isinstance(again, str):
        again.logout()
        again = "logged in"
    return {"sessions": outcome, "after_logout": again}


def login(relay: lib.Relay, addr: str, password: str) -> dict:
    result = login_works(relay, lib.Account(addr, password))
    if isinstance(result, str):
        return {"logged_in": False, "error": result}
    result.logout()
    return {"logged_in": True}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("smtp", "imap", "login"):
        command = commands.add_parser(name)
        command.add_argument("--domain", required=True)
        lib.relay_arguments(command)
    commands.choices["smtp"].add_argument("--port", type=int, default=587)
    commands.choices["smtp"].add_argument("--connections", type=int, required=True)
    commands.choices["imap"].add_argument("--sessions", type=int, required=True)
    commands.choices["login"].add_argument("addr")
    commands.choices["login"].add_argument("password")
    args = parser.parse_args()
    relay = lib.Relay(args.domain, args.ca)
    if args.command == "smtp":
        result = smtp(relay, args.port, args.connections)
    elif args.command == "imap":
        result = imap(relay, args.sessions)
    else:
        result = login(relay, args.addr, args.password)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
