# Part of nixos-tests/federation.nix's test script (and imported by tests/nix): what a DNS
# provider adds to the records `chatmail-dns-zone` prints, so that BIND loads them as a zone.
# (No imports from __future__ here: this text goes into the middle of the test script.)


def zone_file(domain: str, records: str) -> str:
    """A loadable zone: SOA and NS (the relay's own name, to which the records give its
    addresses), then the records."""
    origin = f"{domain}."
    return (f"$ORIGIN {origin}\n$TTL 300\n"
            f"@ SOA {origin} hostmaster.{origin} 1 3600 600 86400 300\n@ NS {origin}\n{records}")
