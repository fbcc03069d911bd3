"""DKIM verification with From-domain alignment (chatmaild.dkimverify) with real RSA keys of two
domains: signatures made by dkimpy as OpenDKIM makes them (relaxed/simple), keys served by a
stand-in for the resolver."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dkim
import pytest

from chatmaild import testmail
from chatmaild.dkimverify import (
    NO_SIGNATURE,
    NO_VALID_SIGNATURE,
    KeyResolver,
    TemporaryKeyFailure,
    aligned_signatures,
    check_dkim,
)

SELECTOR = b"opendkim"


class Keys(KeyResolver):
    """Key records by name; a name mapped to None does not exist, one missing from the map fails
    temporarily (like a DNS timeout)."""

    def __init__(self, records: dict[str, bytes | None]) -> None:
        super().__init__(resolver=object())  # type: ignore[arg-type]
        self.records = records
        self.lookups: list[str] = []

    async def lookup(self, name: str) -> bytes | None:
        self.lookups.append(name)
        if name not in self.records:
            raise TemporaryKeyFailure(f"{name}: timed out")
        return self.records[name]


def signed(message: bytes, pem: bytes, domain: str) -> bytes:
    signature = dkim.sign(message, SELECTOR, domain.encode(), pem, canonicalize=(b"relaxed", b"simple"),
                          include_headers=[b"from", b"to", b"subject", b"date", b"message-id", b"content-type"])
    return signature + message


def headers_and_body(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """As the milter collects them from Postfix."""
    parsed, body = dkim.rfc822_parse(message)
    return [(name, value) for name, value in parsed], body


def verdict(message: bytes, from_domain: str, records: dict[str, bytes | None]) -> str | None:
    headers, body = headers_and_body(message)
    return asyncio.run(check_dkim(headers, body, from_domain, Keys(records)))


def mail(sender: str) -> bytes:
    return testmail.to_bytes(testmail.make_encrypted_message(sender, ["someone@c.test"]))


def test_aligned_valid_signature_passes(private_keys, keys):
    assert verdict(signed(mail("x@a.test"), private_keys["a.test"], "a.test"), "a.test", keys) is None


def test_domain_is_compared_case_insensitively(private_keys, keys):
    assert verdict(signed(mail("x@A.Test"), private_keys["a.test"], "a.test"), "A.Test", keys) is None


def test_unsigned_mail_is_refused():
    assert verdict(mail("x@a.test"), "a.test", {}) == NO_SIGNATURE == "554 5.7.1 No DKIM signature found"


def test_forged_from_signed_with_the_other_relays_key_is_refused(private_keys, keys):
    # b.test's valid signature on a mail claiming to be from a.test
    forged = signed(mail("x@a.test"), private_keys["b.test"], "b.test")
    assert verdict(forged, "a.test", keys) == NO_VALID_SIGNATURE == "554 5.7.1 No valid DKIM signature found"


def test_signature_with_a_foreign_d_tag_and_a_stolen_key_name_is_refused(private_keys, keys):
    # signed with b.test's key but claiming d=a.test: the published a.test key does not verify it
    forged = signed(mail("x@a.test"), private_keys["b.test"], "a.test")
    assert verdict(forged, "a.test", keys) == NO_VALID_SIGNATURE


@pytest.mark.parametrize("signing_domain,from_domain", [("sub.a.test", "a.test"), ("a.test", "sub.a.test")])
def test_subdomains_are_not_aligned(private_keys, keys, signing_domain, from_domain):
    records = {**keys, f"opendkim._domainkey.{signing_domain}.": keys["opendkim._domainkey.a.test."]}
    message = signed(mail(f"x@{from_domain}"), private_keys["a.test"], signing_domain)
    assert verdict(message, from_domain, records) == NO_VALID_SIGNATURE


def test_altered_body_is_refused(private_keys, keys):
    message = signed(mail("x@a.test"), private_keys["a.test"], "a.test")
    assert verdict(message.replace(b"-----END PGP MESSAGE-----", b"-----END PGP MESSAGE----- "), "a.test", keys) == NO_VALID_SIGNATURE


def test_added_second_from_is_refused(private_keys, keys):
    message = signed(mail("x@a.test"), private_keys["a.test"], "a.test")
    assert verdict(b"From: <boss@a.test>\r\n" + message, "a.test", keys) == NO_VALID_SIGNATURE


def test_missing_key_record_is_refused(private_keys):
    message = signed(mail("x@a.test"), private_keys["a.test"], "a.test")
    assert verdict(message, "a.test", {"opendkim._domainkey.a.test.": None}) == NO_VALID_SIGNATURE


def test_key_lookup_failure_is_temporary(private_keys):
    message = signed(mail("x@a.test"), private_keys["a.test"], "a.test")
    reply = verdict(message, "a.test", {})
    assert reply is not None and reply.startswith("451 4.4.3 ")


def test_one_aligned_valid_signature_among_others_is_enough(private_keys, keys):
    message = signed(signed(mail("x@a.test"), private_keys["a.test"], "a.test"), private_keys["b.test"], "b.test")
    assert verdict(message, "a.test", keys) is None


def test_only_aligned_keys_are_looked_up(private_keys, keys):
    message = signed(mail("x@a.test"), private_keys["b.test"], "b.test")
    headers, body = headers_and_body(message)
    resolver = Keys(keys)
    asyncio.run(check_dkim(headers, body, "a.test", resolver))
    assert resolver.lookups == []


def test_aligned_signatures_skips_unparsable_ones():
    headers = [(b"DKIM-Signature", b" garbage\r\n"), (b"dkim-signature", b" v=1; d=A.test.; s=sel; b=x\r\n"),
               (b"Subject", b" x\r\n")]
    count, aligned = aligned_signatures(headers, "a.test")
    assert count == 2
    assert [(s.index, s.domain, s.key_name) for s in aligned] == [(1, "a.test", "sel._domainkey.a.test.")]


def test_key_resolver_caches_and_forgets(monkeypatch: pytest.MonkeyPatch):
    class Answer:
        def __init__(self) -> None:
            self.rrset = type("RRset", (), {"ttl": 300})()
            self.items = [type("TXT", (), {"strings": (b"v=DKIM1;k=rsa;", b"p=AAAA")})()]

        def __iter__(self):
            return iter(self.items)

    calls = []

    class Resolver:
        async def resolve(self, name, rdtype, lifetime, search):
            calls.append(name)
            return Answer()

    resolver = KeyResolver(Resolver())  # type: ignore[arg-type]
    assert asyncio.run(resolver.lookup("s._domainkey.a.test.")) == b"v=DKIM1;k=rsa;p=AAAA"
    assert asyncio.run(resolver.lookup("s._domainkey.a.test.")) == b"v=DKIM1;k=rsa;p=AAAA"
    assert calls == ["s._domainkey.a.test."]
    resolver.forget("s._domainkey.a.test.")
    asyncio.run(resolver.lookup("s._domainkey.a.test."))
    assert len(calls) == 2


def test_key_resolver_against_a_real_dns_server(tmp_path: Path):
    """dnspython's answers as they come from a server: a record split into strings, NXDOMAIN,
    and no answer in time."""
    pytest.importorskip("dns.asyncresolver")
    import dns.asyncresolver

    from dns_stub import DnsStub  # the test helper next to this file

    stub = DnsStub({"s._domainkey.a.test.": [b"v=DKIM1;k=rsa;", b"p=AAAA"]})
    with stub:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = stub.port
        keys = KeyResolver(resolver, timeout=1.0)
        assert asyncio.run(keys.lookup("s._domainkey.a.test.")) == b"v=DKIM1;k=rsa;p=AAAA"
        assert asyncio.run(keys.lookup("nothing._domainkey.a.test.")) is None
        stub.silent = True
        with pytest.raises(TemporaryKeyFailure):
            asyncio.run(keys.lookup("other._domainkey.a.test."))
