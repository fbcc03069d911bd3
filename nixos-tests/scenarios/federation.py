#!/usr/bin/env python3
"""Two relays exchange mail over port 25 (relay-to-relay SMTP with verified TLS), both ways.

    python3 federation.py --from DOMAIN1 --to DOMAIN2 [--ca CAFILE] [--helo FQDN]

Exit 0 when both messages arrive intact, 1 with the failed check's message otherwise.
"""

from __future__ import annotations

import argparse
import sys

import scenario_lib as lib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="first", required=True, help="one relay's mail domain")
    parser.add_argument("--to", dest="second", required=True, help="the other relay's mail domain")
    lib.relay_arguments(parser)
    args = parser.parse_args()
    first = lib.Relay(args.first, args.ca, args.helo)
    second = lib.Relay(args.second, args.ca, args.helo)

    def steps() -> None:
        senders = {first: lib.create_account(first), second: lib.create_account(second)}
        lib.step(f"accounts {senders[first].addr} and {senders[second].addr}")
        for source, target in ((first, second), (second, first)):
            sender, recipient = senders[source], senders[target]
            sent = lib.encrypted_message(sender.addr, [recipient.addr])
            lib.submit(source, sender, [recipient.addr], sent)
            delivered = lib.wait_for_message(target, recipient, lib.message_id(sent))
            lib.assert_delivered_intact(sent, delivered, f"{source.domain} -> {target.domain}")
            lib.step(f"{source.domain} -> {target.domain}: delivered intact ({len(delivered)} bytes)")

    return lib.run_scenario(f"federation {args.first} <-> {args.second}", steps)


if __name__ == "__main__":
    sys.exit(main())
