#!/usr/bin/env python3
"""Calls and realtime as Delta Chat finds them: TURN credentials and the iroh relay in IMAP metadata,
and the iroh relay's routes over HTTPS.

    python3 realtime.py --domain DOMAIN [--ca CAFILE] [--iroh-relay]

- a new account's `GETMETADATA "" /shared/vendor/deltachat/turn` is `DOMAIN:3478:<user>:<password>`;
- with --iroh-relay: `…/irohrelay` is https://DOMAIN, and https://DOMAIN/generate_204 and /ping
  reach iroh-relay (204 and 200); without: `…/irohrelay` is NIL and /relay is not served (404).
"""

from __future__ import annotations

import argparse
import re
import ssl
import urllib.error
import urllib.request

import scenario_lib as lib

KEYS = ("/shared/vendor/deltachat/turn", "/shared/vendor/deltachat/irohrelay")


def deltachat_metadata(relay: lib.Relay, account: lib.Account) -> dict[str, str | None]:
    """The server metadata Delta Chat reads: key name -> value (None for NIL)."""
    client = lib.imap_login(relay, account)
    try:
        found: dict[str, str | None] = {}
        for key in KEYS:
            data = client._raw_command_untagged(b"GETMETADATA", [b'""', key.encode()],
                                                response_name="METADATA", uid=False)
            text = " ".join(piece.decode() if isinstance(piece, bytes) else str(piece)
                            for item in data for piece in (item if isinstance(item, tuple) else (item,)))
            # '"" (KEY "value")', '"" (KEY {N} value)' (a literal) or '"" (KEY NIL)'
            value = re.search(re.escape(key) + r' (?:"([^"]*)"|\{\d+\} (\S+)|(NIL))', text)
            lib.check(value is not None, f"GETMETADATA {key}: unexpected reply {text!r}")
            found[key.rsplit("/", 1)[1]] = None if value.group(3) else value.group(1) or value.group(2)
        return found
    finally:
        client.logout()


def https_status(relay: lib.Relay, path: str) -> int:
    try:
        with urllib.request.urlopen(f"https://{relay.domain}{path}", context=relay.tls(), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as error:
        return error.code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", required=True)
    parser.add_argument("--iroh-relay", action="store_true", help="the relay serves an iroh relay")
    lib.relay_arguments(parser)
    args = parser.parse_args()
    relay = lib.Relay(args.domain, args.ca)

    def steps() -> None:
        found = deltachat_metadata(relay, lib.create_account(relay))
        turn = (found["turn"] or "").split(":")
        lib.check(len(turn) == 4 and turn[:2] == [args.domain, "3478"] and turn[2].isdigit(),
                  f"turn metadata is {found['turn']!r}, not {args.domain}:3478:<user>:<password>")
        lib.step(f"TURN credentials in IMAP metadata: {args.domain}:3478:{turn[2]}:…")
        if args.iroh_relay:
            lib.check(found["irohrelay"] == f"https://{args.domain}", f"irohrelay is {found['irohrelay']!r}")
            for path, expected in (("/generate_204", 204), ("/ping", 200)):
                status = https_status(relay, path)
                lib.check(status == expected, f"GET {path}: {status}, not {expected} from iroh-relay")
            lib.step("iroh relay advertised, /generate_204 and /ping answered by iroh-relay")
        else:
            lib.check(found["irohrelay"] is None, f"irohrelay is {found['irohrelay']!r} though none is served")
            lib.check(https_status(relay, "/relay") == 404, "/relay is served though no iroh relay runs")
            lib.step("no iroh relay advertised or routed")

    return lib.run_scenario("realtime", steps)


if __name__ == "__main__":
    raise SystemExit(main())
