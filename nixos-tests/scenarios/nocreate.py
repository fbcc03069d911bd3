#!/usr/bin/env python3
"""The nocreate switch: while the relay's nocreate file exists, no account is created.

Two phases around the caller creating the file on the server (only it can touch the server):

    python3 nocreate.py prepare --domain DOMAIN --accounts FILE [--ca CAFILE]
    (caller creates the nocreate file: /etc/chatmail-nocreate, or $CHATMAIL_NOCREATE_PATH)
    python3 nocreate.py check --domain DOMAIN --accounts FILE [--ca CAFILE]

`prepare` creates an account and writes its credentials to FILE; `check` asserts that a new
address cannot log in (so is not created) while the prepared account still can.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import scenario_lib as lib


def prepare(relay: lib.Relay, accounts: Path) -> None:
    account = lib.create_account(relay)
    accounts.write_text(json.dumps({"addr": account.addr, "password": account.password}))
    lib.step(f"created {account.addr}, credentials in {accounts}")


def check(relay: lib.Relay, accounts: Path) -> None:
    existing = lib.Account(**json.loads(accounts.read_text()))
    fresh = lib.random_account(relay.domain)
    lib.check(lib.login_refused(relay, fresh.addr, fresh.password),
              f"{fresh.addr} was created although the nocreate file exists")
    lib.check(lib.login_refused(relay, fresh.addr, fresh.password, port=143),
              f"{fresh.addr} was created on 143 although the nocreate file exists")
    lib.step(f"new address {fresh.addr} refused")
    lib.imap_login(relay, existing).logout()
    lib.step(f"existing account {existing.addr} still logs in")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=("prepare", "check"))
    parser.add_argument("--domain", required=True, help="the relay's mail domain (also its host)")
    parser.add_argument("--accounts", required=True, type=Path,
                        help="file passing the prepared account from `prepare` to `check`")
    lib.relay_arguments(parser)
    args = parser.parse_args()
    relay = lib.Relay(args.domain, args.ca, args.helo)
    phase = prepare if args.phase == "prepare" else check
    return lib.run_scenario(f"nocreate {args.phase} {args.domain}",
                            lambda: phase(relay, args.accounts))


if __name__ == "__main__":
    sys.exit(main())
