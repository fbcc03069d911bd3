"""DKIM verification of incoming mail with From-domain alignment, as upstream filtermail (1.10+) does.

A mail from another server must carry a DKIM signature that verifies and whose domain (``d=``) is
the domain of its From address, compared case-insensitively and exactly: a signature of a parent
domain or a subdomain does not count (upstream's rule since the OpenDKIM screen script of 1.9.0).
MAILER-DAEMON reports are no exception. Replies, upstream's texts:

- ``554 5.7.1 No DKIM signature found``: the mail has no DKIM-Signature at all;
- ``554 5.7.1 No valid DKIM signature found``: none that is aligned and verifies (also when the
  key record does not exist);
- ``451 4.4.3 …``: the key of an aligned signature could not be looked up (DNS timeout or server
  failure) and no other aligned signature verified: the sender retries later.

Signatures are checked with dkimpy (RSA verification only; signing stays with OpenDKIM). The
key records are looked up first, asynchronously (dnspython, the system resolver, bounded time,
cached by TTL), only for aligned signatures; dkimpy then gets them from that lookup.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import dkim
import dns.asyncresolver
import dns.exception
import dns.resolver
from dkim.util import InvalidTagValueList, parse_tag_value

log = logging.getLogger("filtermail.dkim")

NO_SIGNATURE = "554 5.7.1 No DKIM signature found"
NO_VALID_SIGNATURE = "554 5.7.1 No valid DKIM signature found"
# all key lookups of one mail together; Postfix waits milter_content_timeout (300 s) for the answer
DNS_TIMEOUT = 20.0
KEY_CACHE_SIZE = 1000
KEY_CACHE_MAX_TTL = 3600.0
# more signatures than this are not looked at (a mail has one or two)
MAX_SIGNATURES = 8

Header = tuple[bytes, bytes]  # (name, raw value after the colon, with its CRLF line ends)


@dataclass(frozen=True)
class Signature:
    index: int  # among the DKIM-Signature headers, top first (dkimpy's idx)
    domain: str
    selector: str

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}."


class TemporaryKeyFailure(Exception):
    """A key record could not be looked up now (timeout, server failure)."""


def aligned_signatures(headers: Sequence[Header], from_domain: str) -> tuple[int, list[Signature]]:
    """(number of DKIM-Signature headers, those whose d= is ``from_domain``); unparsable ones
    count, but are never aligned."""
    values = [value for name, value in headers if name.lower() == b"dkim-signature"]
    aligned = []
    for index, value in enumerate(values[:MAX_SIGNATURES]):
        try:
            tags = parse_tag_value(value)
            domain = tags[b"d"].decode("ascii").strip().rstrip(".").lower()
            selector = tags[b"s"].decode("ascii").strip()
        except (InvalidTagValueList, KeyError, UnicodeDecodeError):
            continue
        if domain == from_domain.lower() and domain and selector:
            aligned.append(Signature(index, domain, selector))
    return len(values), aligned


def verify_signature(headers: Sequence[Header], body: bytes, signature: Signature, key_record: bytes | None) -> bool:
    """Whether ``signature`` verifies with ``key_record`` (the TXT data; None: no such record)."""
    checker = dkim.DKIM(logger=log, minkey=1024)
    checker.headers = [[name, value] for name, value in headers]
    checker.body = body
    try:
        return bool(checker.verify(idx=signature.index, dnsfunc=lambda name, timeout=5: key_record))
    except dkim.DKIMException as e:
        log.info("DKIM signature of %s (s=%s) does not verify: %s", signature.domain, signature.selector, e)
        return False


class KeyResolver:
    """DKIM key TXT records from the system resolver, cached by their TTL (at most an hour)."""

    def __init__(self, resolver: dns.asyncresolver.Resolver | None = None, timeout: float = DNS_TIMEOUT) -> None:
        self.resolver = resolver or dns.asyncresolver.Resolver()
        self.timeout = timeout
        self.cache: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def lookup(self, name: str) -> bytes | None:
        """The TXT data of ``name`` (strings joined), None if there is none; raises
        TemporaryKeyFailure when DNS does not answer in time or fails."""
        cached = self.cache.get(name)
        if cached is not None and cached[0] > time.monotonic():
            self.cache.move_to_end(name)
            return cached[1]
        try:
            answer = await self.resolver.resolve(name, "TXT", lifetime=self.timeout, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.YXDOMAIN) as e:
            raise TemporaryKeyFailure(f"{name}: {e}") from e
        records = [b"".join(rdata.strings) for rdata in answer]
        record = next((r for r in records if b"p=" in r), records[0] if records else None)
        if record is not None:
            ttl = min(float(answer.rrset.ttl if answer.rrset is not None else 0), KEY_CACHE_MAX_TTL)
            self.cache[name] = (time.monotonic() + ttl, record)
            while len(self.cache) > KEY_CACHE_SIZE:
                self.cache.popitem(last=False)
        return record

    def forget(self, name: str) -> None:
        """Drop a cached key (after a signature failed with it: the key may have changed)."""
        self.cache.pop(name, None)


async def check_dkim(headers: Sequence[Header], body: bytes, from_domain: str, keys: KeyResolver) -> str | None:
    """The reply refusing the mail, or None if an aligned signature verifies."""
    count, signatures = aligned_signatures(headers, from_domain)
    if count == 0:
        return NO_SIGNATURE
    temporary: list[str] = []
    for signature in signatures:
        try:
            record = await keys.lookup(signature.key_name)
        except TemporaryKeyFailure as e:
            temporary.append(str(e))
            continue
        if verify_signature(headers, body, signature, record):
            return None
        keys.forget(signature.key_name)
    if temporary:
        return f"451 4.4.3 DKIM key lookup failed, try again later: {temporary[0]}"
    return NO_VALID_SIGNATURE
