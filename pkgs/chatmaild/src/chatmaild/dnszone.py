"""``chatmail-dns-zone``: the DNS records a relay needs, and a check of what DNS answers.

The records are upstream's (cmdeploy ``chatmail.zone.j2``), in two groups:

required
    A/AAAA of the domain, MX, the MTA-STS TXT and the ``mta-sts``/``www`` host names, DKIM key;
recommended
    SPF, DMARC, CAA (Let's Encrypt), ADSP, SRV records of the four mail services.

Everything here is a pure function except the edges: reading the DKIM key file, finding this
host's public addresses, and a minimal DNS stub resolver over UDP (TCP when the answer is
truncated) that queries one given server with bounded timeouts.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import ipaddress
import re
import secrets
import socket
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, read_config

DEFAULT_DKIM_SELECTOR = "opendkim"
DKIM_KEY_DIR = Path("/etc/dkimkeys")  # upstream keeps <selector>.private here
RESOLV_CONF = Path("/etc/resolv.conf")

SPF_VALUE = "v=spf1 a ~all"
DMARC_VALUE = "v=DMARC1;p=reject;adkim=s;aspf=s"
ADSP_VALUE = "dkim=discardable"
CAA_ISSUER = "letsencrypt.org"
MX_PREFERENCE = 10
# (service label, port) of the SRV records (RFC 6186, RFC 8314)
SRV_SERVICES = (("_submission", 587), ("_submissions", 465), ("_imap", 143), ("_imaps", 993))


# --- the records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One resource record. ``value`` is its data in a canonical text form that both the zone file
    and DNS answers are brought to: addresses as ``ipaddress`` prints them, names absolute and lower
    case, TXT as the plain (joined, unquoted) text."""

    name: str
    rtype: str
    value: str
    required: bool

    def zone_line(self, name_width: int = 0) -> str:
        data = _quote_txt(self.value) if self.rtype == "TXT" else self.value
        return f"{self.name:<{name_width}} {self.rtype:<5} {data}"


def _quote_txt(text: str) -> str:
    # one TXT character-string holds at most 255 bytes; longer texts (DKIM keys) are split
    escaped = [
        text[i : i + 255].replace("\\", "\\\\").replace('"', '\\"')
        for i in range(0, len(text), 255)
    ]
    return " ".join(f'"{chunk}"' for chunk in escaped)


@dataclass(frozen=True)
class ZoneParams:
    mail_domain: str
    ipv4: Sequence[str]
    ipv6: Sequence[str]
    dkim_public_key: str  # base64 of the DER SubjectPublicKeyInfo, as DKIM's p= tag takes it
    sts_id: str
    dkim_selector: str = DEFAULT_DKIM_SELECTOR
    acme_account_url: str | None = None


def dkim_txt_value(public_key: str) -> str:
    # upstream's tags: s=email restricts the key to mail, t=s forbids subdomains of the signer
    return f"v=DKIM1;k=rsa;p={public_key};s=email;t=s"


def zone_records(params: ZoneParams) -> list[Record]:
    """Every record of the relay's zone, required ones first."""
    domain = params.mail_domain.lower().rstrip(".") + "."

    def req(name: str, rtype: str, value: str) -> Record:
        return Record(name, rtype, value, required=True)

    def rec(name: str, rtype: str, value: str) -> Record:
        return Record(name, rtype, value, required=False)

    caa = f'0 issue "{CAA_ISSUER}"'
    if params.acme_account_url:
        # RFC 8657: only this ACME account may get certificates for the domain
        caa = f'0 issue "{CAA_ISSUER};accounturi={params.acme_account_url}"'
    return [
        *(req(domain, "A", str(ipaddress.IPv4Address(a))) for a in params.ipv4),
        *(req(domain, "AAAA", str(ipaddress.IPv6Address(a))) for a in params.ipv6),
        req(domain, "MX", f"{MX_PREFERENCE} {domain}"),
        req(f"_mta-sts.{domain}", "TXT", f"v=STSv1; id={params.sts_id}"),
        req(f"mta-sts.{domain}", "CNAME", domain),
        req(f"www.{domain}", "CNAME", domain),
        req(
            f"{params.dkim_selector}._domainkey.{domain}",
            "TXT",
            dkim_txt_value(params.dkim_public_key),
        ),
        rec(domain, "TXT", SPF_VALUE),
        rec(f"_dmarc.{domain}", "TXT", DMARC_VALUE),
        rec(domain, "CAA", caa),
        rec(f"_adsp._domainkey.{domain}", "TXT", ADSP_VALUE),
        *(
            rec(f"{service}._tcp.{domain}", "SRV", f"0 1 {port} {domain}")
            for service, port in SRV_SERVICES
        ),
    ]


def render_zone(records: Sequence[Record]) -> str:
    """The records as BIND zone file lines (absolute names, no TTL: the provider's default)."""
    width = max(len(r.name) for r in records)
    lines = ["; Required DNS records of the chatmail relay"]
    lines += [r.zone_line(width) for r in records if r.required]
    lines += ["", "; Recommended DNS records, for interoperability and security hardening"]
    lines += [r.zone_line(width) for r in records if not r.required]
    return "\n".join(lines) + "\n"


def new_sts_id(now: datetime.datetime) -> str:
    # upstream's form; a new id tells senders to fetch the MTA-STS policy again
    return now.strftime("%Y%m%d%H%M")


def sts_id_from_txt(values: Iterable[str]) -> str | None:
    """The id of a published ``v=STSv1; id=...`` record, to keep it when nothing changed."""
    for value in values:
        tags = _txt_tags(value)
        if tags.get("v") == "STSv1" and tags.get("id"):
            return tags["id"]
    return None


def _txt_tags(text: str) -> dict[str, str]:
    # "k=v; k2=v2" tag lists of DKIM, DMARC and MTA-STS
    tags = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            tags[key.strip()] = value.strip()
    return tags


# --- comparing with DNS ------------------------------------------------------------------------


class DnsError(Exception):
    """A query got no usable answer (timeout, malformed reply, server failure)."""


class ForeignReply(DnsError):
    """A datagram that is no reply to the query (e.g. a late reply to an earlier attempt)."""


@dataclass(frozen=True)
class Finding:
    """How one record set (all expected records of a name and type) compares with DNS."""

    records: tuple[Record, ...]
    status: str  # "ok", "missing", "different" or "error"
    found: tuple[str, ...] = ()
    error: str = ""

    @property
    def required(self) -> bool:
        return any(r.required for r in self.records)


def _kind(rtype: str, value: str) -> str:
    """Which answers compete with an expected record: other TXT records of the same kind (a second
    SPF record breaks SPF, an unrelated verification token does not), CAA records with the same tag;
    for the other types every record of the set."""
    if rtype == "TXT":
        key, _, tag_value = value.split(";", 1)[0].split(" ", 1)[0].partition("=")
        # "v=" names the kind (v=spf1, v=DMARC1, v=STSv1, v=DKIM1); else the first tag's name does
        return f"v={tag_value}" if key == "v" else key
    if rtype == "CAA":
        return value.split()[1].lower() if len(value.split()) > 1 else ""
    return ""


def _comparable(rtype: str, value: str) -> object:
    """What must be equal for two record data to mean the same: DKIM, DMARC and MTA-STS tag lists
    regardless of tag order and spaces, other texts regardless of runs of spaces."""
    if rtype != "TXT":
        return value
    kind = _kind(rtype, value)
    if kind.startswith("v=") and kind != "v=spf1":
        return tuple(sorted(_txt_tags(value).items()))
    return " ".join(value.split())


def group_records(records: Iterable[Record]) -> dict[tuple[str, str], tuple[Record, ...]]:
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        groups.setdefault((record.name, record.rtype), []).append(record)
    return {key: tuple(group) for key, group in groups.items()}


def compare_records(
    records: Iterable[Record], answers: Mapping[tuple[str, str], Sequence[str] | DnsError]
) -> list[Finding]:
    """Compare the expected records with DNS answers, keyed by (name, type) as ``group_records``."""
    findings = []
    for key, group in group_records(records).items():
        answer = answers[key]
        if isinstance(answer, DnsError):
            findings.append(Finding(group, "error", error=str(answer)))
            continue
        kinds = {_kind(r.rtype, r.value) for r in group}
        competing = tuple(v for v in answer if _kind(key[1], v) in kinds)
        if {_comparable(key[1], v) for v in competing} == {
            _comparable(r.rtype, r.value) for r in group
        }:
            status = "ok"
        else:
            status = "different" if competing else "missing"
        findings.append(Finding(group, status, found=competing))
    return findings


def render_findings(findings: Sequence[Finding]) -> str:
    width = max(len(r.name) for f in findings for r in f.records)
    lines = []
    for finding in findings:
        need = "required" if finding.required else "recommended"
        label = "ok" if finding.status == "ok" else f"{finding.status.upper()} ({need})"
        lines += [f"{label:<25} {r.zone_line(width)}" for r in finding.records]
        if finding.status == "different":
            answer = ", ".join(
                _quote_txt(v) if finding.records[0].rtype == "TXT" else v for v in finding.found
            )
            lines.append(f"{'':<25} DNS answers: {answer}")
        if finding.status == "error":
            lines.append(f"{'':<25} query failed: {finding.error}")
    bad_required = sum(f.status != "ok" for f in findings if f.required)
    bad_recommended = sum(f.status != "ok" for f in findings if not f.required)
    lines.append("")
    if bad_required:
        lines.append(
            f"{bad_required} required record set(s) missing or wrong: set them at the DNS provider."
        )
    if bad_recommended:
        lines.append(f"{bad_recommended} recommended record set(s) missing or wrong.")
    if not bad_required and not bad_recommended:
        lines.append("All DNS records are in place.")
    return "\n".join(lines) + "\n"


# --- a minimal DNS stub resolver (RFC 1035) ----------------------------------------------------

RTYPES = {"A": 1, "CNAME": 5, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33, "CAA": 257}
_OPT = 41
_EDNS_UDP_SIZE = 1232  # the size DNS flag day 2020 settled on: no IP fragmentation
_RCODES = {1: "FORMERR", 2: "SERVFAIL", 4: "NOTIMP", 5: "REFUSED"}
_NXDOMAIN = 3


def build_query(name: str, rtype: str, query_id: int) -> bytes:
    """A recursive query for ``name``/``rtype`` with an EDNS0 OPT record (larger UDP answers)."""
    header = struct.pack("!6H", query_id, 0x0100, 1, 0, 0, 1)  # RD set; 1 question, 1 additional
    question = _encode_name(name) + struct.pack("!2H", RTYPES[rtype], 1)
    opt = b"\x00" + struct.pack("!2HIH", _OPT, _EDNS_UDP_SIZE, 0, 0)
    return header + question + opt


def _encode_name(name: str) -> bytes:
    labels = [label.encode("ascii") for label in name.rstrip(".").split(".") if label]
    if any(len(label) > 63 for label in labels):
        raise DnsError(f"{name!r} has a label longer than 63 characters")
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def _take(data: bytes, pos: int, length: int) -> bytes:
    if pos + length > len(data):
        raise DnsError("answer is cut short")
    return data[pos : pos + length]


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    """The (maybe compressed) name at ``pos``, absolute and lower case, and the offset after it."""
    labels: list[str] = []
    after: int | None = None
    for _ in range(128):  # bounds compression-pointer loops
        length = _take(data, pos, 1)[0]
        if length & 0xC0 == 0xC0:
            if after is None:
                after = pos + 2
            pos = ((length & 0x3F) << 8) | _take(data, pos + 1, 1)[0]
            continue
        if length & 0xC0:
            raise DnsError("unknown label type")
        if length == 0:
            return ".".join(labels).lower() + ".", after if after is not None else pos + 1
        labels.append(_take(data, pos + 1, length).decode("latin-1"))
        pos += 1 + length
    raise DnsError("name compression loop")


def _decode_rdata(data: bytes, pos: int, rdlength: int, rtype: str) -> str:
    """Record data in the canonical text form of :class:`Record`."""
    rdata = _take(data, pos, rdlength)
    if rtype == "A":
        return str(ipaddress.IPv4Address(rdata))
    if rtype == "AAAA":
        return str(ipaddress.IPv6Address(rdata))
    if rtype == "CNAME":
        return _read_name(data, pos)[0]
    if rtype == "MX":
        return f"{struct.unpack('!H', rdata[:2])[0]} {_read_name(data, pos + 2)[0]}"
    if rtype == "SRV":
        priority, weight, port = struct.unpack("!3H", _take(rdata, 0, 6))
        return f"{priority} {weight} {port} {_read_name(data, pos + 6)[0]}"
    if rtype == "TXT":
        strings, i = [], 0
        while i < len(rdata):
            strings.append(_take(rdata, i + 1, rdata[i]))
            i += 1 + rdata[i]
        return b"".join(strings).decode("utf-8", "backslashreplace")
    if rtype == "CAA":
        flags, tag_length = _take(rdata, 0, 2)
        tag = _take(rdata, 2, tag_length).decode("ascii", "backslashreplace").lower()
        value = rdata[2 + tag_length :].decode("utf-8", "backslashreplace")
        return f'{flags} {tag} "{value}"'
    raise DnsError(f"cannot decode {rtype} records")


def parse_response(data: bytes, query_id: int, name: str, rtype: str) -> list[str] | None:
    """The ``rtype`` records of ``name`` in a reply (empty for NXDOMAIN or no data), None when
    the reply is truncated (ask again over TCP). Raises DnsError on failures and foreign replies."""
    reply_id, flags, qdcount, ancount = struct.unpack("!4H", _take(data, 0, 8))
    if reply_id != query_id or not flags & 0x8000:
        raise ForeignReply("reply does not belong to the query")
    if flags & 0x0200:
        return None
    rcode = flags & 0x000F
    if rcode == _NXDOMAIN:
        return []
    if rcode:
        raise DnsError(f"server answered {_RCODES.get(rcode, f'rcode {rcode}')}")
    qname = name.lower().rstrip(".") + "."
    pos = 12
    for _ in range(qdcount):
        question_name, pos = _read_name(data, pos)
        question_type = struct.unpack("!H", _take(data, pos, 2))[0]
        if question_name != qname or question_type != RTYPES[rtype]:
            raise DnsError("reply is for another question")
        pos += 4
    values = []
    for _ in range(ancount):
        owner, pos = _read_name(data, pos)
        answer_type, _class, _ttl, rdlength = struct.unpack("!2HIH", _take(data, pos, 10))
        pos += 10
        # a resolver following a CNAME adds the target's records: only the name asked counts
        if owner == qname and answer_type == RTYPES[rtype]:
            try:
                values.append(_decode_rdata(data, pos, rdlength, rtype))
            except (ValueError, struct.error):  # e.g. an A record that is not 4 bytes long
                raise DnsError(f"malformed {rtype} record in the answer") from None
        pos += rdlength
    return values


@dataclass(frozen=True)
class Resolver:
    host: str
    port: int = 53
    timeout: float = 2.0  # seconds per attempt
    attempts: int = 2

    def _sockaddr(self) -> tuple[int, tuple]:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST
        )[0]
        return family, sockaddr

    def query(self, name: str, rtype: str) -> list[str]:
        """The ``rtype`` records of ``name``; raises DnsError."""
        last_error = DnsError("no attempt made")
        for _ in range(self.attempts):
            query_id = secrets.randbelow(0x10000)
            query = build_query(name, rtype, query_id)
            try:
                family, sockaddr = self._sockaddr()
                values = self._query_udp(family, sockaddr, query, query_id, name, rtype)
                if values is None:
                    values = self._query_tcp(family, sockaddr, query, query_id, name, rtype)
                    if values is None:
                        raise DnsError("answer truncated even over TCP")
                return values
            except TimeoutError:
                last_error = DnsError(
                    f"no answer from {self.host} port {self.port} within {self.timeout} s"
                )
            except OSError as e:
                last_error = DnsError(f"{self.host} port {self.port}: {e.strerror or e}")
        raise last_error

    def _query_udp(
        self, family: int, sockaddr: tuple, query: bytes, query_id: int, name: str, rtype: str
    ) -> list[str] | None:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(sockaddr)  # the kernel then drops datagrams from other sources
            sock.send(query)
            while True:  # each recv is bounded by the timeout
                try:
                    return parse_response(sock.recv(65535), query_id, name, rtype)
                except ForeignReply:
                    continue

    def _query_tcp(
        self, family: int, sockaddr: tuple, query: bytes, query_id: int, name: str, rtype: str
    ) -> list[str] | None:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(sockaddr)
            sock.sendall(struct.pack("!H", len(query)) + query)
            length = struct.unpack("!H", _recv_exactly(sock, 2))[0]
            return parse_response(_recv_exactly(sock, length), query_id, name, rtype)


def _recv_exactly(sock: socket.socket, length: int) -> bytes:
    data = b""
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        if not chunk:
            raise DnsError("server closed the TCP connection early")
        data += chunk
    return data


def lookup_all(
    resolver: Resolver, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], list[str] | DnsError]:
    """Query every (name, type) at once: an unresponsive server costs one timeout, not many."""

    def lookup(key: tuple[str, str]) -> list[str] | DnsError:
        try:
            return resolver.query(*key)
        except DnsError as e:
            return e

    keys = list(keys)
    with ThreadPoolExecutor(max_workers=min(16, len(keys) or 1)) as pool:
        return dict(zip(keys, pool.map(lookup, keys), strict=True))


def resolver_from_resolv_conf(text: str) -> str:
    """The first ``nameserver`` of a resolv.conf; glibc's default when there is none."""
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            return words[1]
    return "127.0.0.1"


def parse_resolver(text: str) -> tuple[str, int]:
    """``ADDR``, ``ADDR:PORT`` or ``[V6ADDR]:PORT`` -> (address, port); raises ValueError."""
    try:
        return str(ipaddress.ip_address(text.split("%")[0])) + _scope(text), 53
    except ValueError:
        pass
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"{text!r} is not an IP address, ADDR:PORT or [ADDR]:PORT")
    host = host.removeprefix("[").removesuffix("]")
    ipaddress.ip_address(host.split("%")[0])
    return host, int(port)


def _scope(text: str) -> str:
    # a link-local IPv6 resolver keeps its "%interface" suffix
    return "%" + text.split("%", 1)[1] if "%" in text else ""


# --- reading keys and addresses (edges) --------------------------------------------------------

# DER encoding of the rsaEncryption AlgorithmIdentifier: SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
_RSA_ALGORITHM = bytes.fromhex("300d06092a864886f70d0101010500")
_PEM_RE = re.compile(r"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", re.DOTALL)


class DkimKeyError(ValueError):
    """The DKIM key file holds no RSA key this tool can read."""


def _der_read(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start, end) of the DER element at ``pos``: its content is ``data[start:end]``."""
    if pos + 2 > len(data):
        raise DkimKeyError("DER data cut short")
    tag, length = data[pos], data[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or start + count > len(data):
            raise DkimKeyError("bad DER length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    if start + length > len(data):
        raise DkimKeyError("DER data cut short")
    return tag, start, start + length


def _der_children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, start, end, element start) of each element in ``data[start:end]``."""
    children = []
    while start < end:
        tag, content_start, content_end = _der_read(data, start)
        children.append((tag, content_start, content_end, start))
        start = content_end
    return children


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    length_bytes = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length_bytes)]) + length_bytes + content


def rsa_public_key_from_pkcs1(der: bytes) -> bytes:
    """SubjectPublicKeyInfo (DER) of a PKCS#1 RSAPrivateKey: version, n, e, d, ..."""
    tag, start, end = _der_read(der, 0)
    fields = _der_children(der, start, end) if tag == 0x30 else []
    if len(fields) < 3 or any(f[0] != 0x02 for f in fields[:3]):
        raise DkimKeyError("not a PKCS#1 RSA private key")
    # n and e are copied as the DER INTEGER elements they already are
    (_, _, n_end, n_start), (_, _, e_end, e_start) = fields[1], fields[2]
    rsa_public_key = _der(0x30, der[n_start:n_end] + der[e_start:e_end])
    return _der(0x30, _RSA_ALGORITHM + _der(0x03, b"\x00" + rsa_public_key))


def rsa_public_key_from_pkcs8(der: bytes) -> bytes:
    """SubjectPublicKeyInfo (DER) of a PKCS#8 PrivateKeyInfo holding an RSA key."""
    tag, start, end = _der_read(der, 0)
    fields = _der_children(der, start, end) if tag == 0x30 else []
    if len(fields) < 3 or fields[2][0] != 0x04:
        raise DkimKeyError("not a PKCS#8 private key")
    _, _, algorithm_end, algorithm_start = fields[1]
    if der[algorithm_start:algorithm_end] != _RSA_ALGORITHM:
        raise DkimKeyError("not an RSA key (only RSA DKIM keys are supported)")
    _, key_start, key_end, _ = fields[2]
    return rsa_public_key_from_pkcs1(der[key_start:key_end])


def _check_spki(der: bytes) -> bytes:
    tag, start, end = _der_read(der, 0)
    algorithm = _der_children(der, start, end)[0] if tag == 0x30 and end > start else None
    if algorithm is None or der[algorithm[3] : algorithm[2]] != _RSA_ALGORITHM:
        raise DkimKeyError("not an RSA public key (only RSA DKIM keys are supported)")
    return der


def dkim_public_key(text: str) -> str:
    """The base64 DKIM ``p=`` value from the text of a key file.

    Accepted: a PEM private key (PKCS#1 ``RSA PRIVATE KEY`` or PKCS#8 ``PRIVATE KEY``, as
    ``opendkim-genkey`` writes ``<selector>.private``), a PEM ``PUBLIC KEY``, or the TXT record
    ``opendkim-genkey`` writes to ``<selector>.txt``.
    """
    pem = _PEM_RE.search(text)
    if pem is None:
        # "( "v=DKIM1; h=sha256; k=rsa; " "p=MIIB..." "...QAB" )": the quoted strings joined
        tags = _txt_tags("".join(re.findall(r'"([^"]*)"', text)))
        if tags.get("k", "rsa") != "rsa" or not tags.get("p"):
            raise DkimKeyError("no PEM key and no DKIM TXT record with an RSA p= tag")
        der = _decode_base64(tags["p"])
    else:
        label = pem.group(1)
        body = _decode_base64(pem.group(2))
        convert = {
            "RSA PRIVATE KEY": rsa_public_key_from_pkcs1,
            "PRIVATE KEY": rsa_public_key_from_pkcs8,
            "PUBLIC KEY": lambda der: der,
        }.get(label)
        if convert is None:
            raise DkimKeyError(f"cannot read a PEM {label!r} (encrypted keys are not supported)")
        der = convert(body)
    return base64.b64encode(_check_spki(der)).decode("ascii")


def _decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error:
        raise DkimKeyError("invalid base64") from None


def public_source_address(family: socket.AddressFamily) -> str | None:
    """This host's source address towards the internet, if it is a global one.

    Connecting a UDP socket sends nothing; it only makes the kernel choose a route and source
    address. The destination is a documentation address (RFC 5737 / RFC 3849): never contacted.
    """
    destination = "192.0.2.1" if family == socket.AF_INET else "2001:db8::1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((destination, 9))
            address = ipaddress.ip_address(sock.getsockname()[0])
    except OSError:  # no route or no such address family
        return None
    return str(address) if address.is_global else None


# --- command line ------------------------------------------------------------------------------


def _address_list(version: int):
    def parse(text: str) -> str:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            address = None
        if address is None or address.version != version:
            raise argparse.ArgumentTypeError(f"{text!r} is not an IPv{version} address")
        return str(address)

    return parse


def _resolver_arg(text: str) -> tuple[str, int]:
    try:
        return parse_resolver(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatmail-dns-zone",
        description="Print the DNS records of a chatmail relay as BIND zone file lines, "
        "or with --check compare them with what DNS answers (exit status 1 when a required record "
        "is missing or wrong).",
    )
    parser.add_argument("inipath", help="chatmail.ini (mail_domain, disable_ipv6)")
    parser.add_argument(
        "--ipv4",
        action="append",
        type=_address_list(4),
        default=[],
        metavar="ADDR",
        help="address of the A record (repeatable); default: this host's public IPv4 address",
    )
    parser.add_argument(
        "--ipv6",
        action="append",
        type=_address_list(6),
        default=[],
        metavar="ADDR",
        help="address of the AAAA record (repeatable); default: this host's public IPv6 address",
    )
    parser.add_argument(
        "--dkim-selector", default=DEFAULT_DKIM_SELECTOR, help="default: %(default)s"
    )
    parser.add_argument(
        "--dkim-key",
        type=Path,
        metavar="PATH",
        help="DKIM key: PEM private or public key, or opendkim-genkey's .txt; "
        f"default: {DKIM_KEY_DIR}/<selector>.private",
    )
    parser.add_argument(
        "--acme-account-url",
        metavar="URL",
        help="restrict the CAA record to this ACME account (RFC 8657)",
    )
    parser.add_argument(
        "--sts-id",
        metavar="ID",
        help="id of the MTA-STS record; default: the one in DNS, else a new timestamp",
    )
    parser.add_argument(
        "--check", action="store_true", help="compare with DNS instead of printing the zone"
    )
    parser.add_argument(
        "--resolver",
        type=_resolver_arg,
        metavar="ADDR[:PORT]",
        help=f"DNS server to ask; default: the first nameserver of {RESOLV_CONF}",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="per query attempt (2 attempts); default: %(default)s",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        config = read_config(args.inipath)
    except ConfigError as e:
        parser.error(str(e))
    if config.disable_ipv6 and args.ipv6:
        parser.error("--ipv6 given, but chatmail.ini sets disable_ipv6")
    ipv4, ipv6 = args.ipv4, args.ipv6
    if not ipv4 and not ipv6:
        ipv4 = [a for a in [public_source_address(socket.AF_INET)] if a]
        ipv6 = [
            a for a in [public_source_address(socket.AF_INET6)] if a and not config.disable_ipv6
        ]
        if not ipv4 and not ipv6:
            parser.error("this host has no public address to publish: pass --ipv4 and/or --ipv6")
    key_path = args.dkim_key or DKIM_KEY_DIR / f"{args.dkim_selector}.private"
    try:
        public_key = dkim_public_key(key_path.read_text())
    except OSError as e:
        parser.error(f"cannot read the DKIM key {key_path}: {e.strerror}")
    except (DkimKeyError, UnicodeDecodeError) as e:
        parser.error(f"DKIM key {key_path}: {e}")

    if args.resolver is None:
        try:
            resolv_conf = RESOLV_CONF.read_text()
        except OSError:
            resolv_conf = ""
        args.resolver = (resolver_from_resolv_conf(resolv_conf), 53)
    resolver = Resolver(*args.resolver, timeout=args.timeout)

    domain = config.mail_domain
    sts_id = args.sts_id
    if sts_id is None:
        try:
            sts_id = sts_id_from_txt(resolver.query(f"_mta-sts.{domain}", "TXT"))
        except DnsError as e:
            print(f"chatmail-dns-zone: could not look up the MTA-STS id: {e}", file=sys.stderr)
        sts_id = sts_id or new_sts_id(datetime.datetime.now(datetime.UTC))

    records = zone_records(
        ZoneParams(
            mail_domain=domain,
            ipv4=ipv4,
            ipv6=ipv6,
            dkim_public_key=public_key,
            sts_id=sts_id,
            dkim_selector=args.dkim_selector,
            acme_account_url=args.acme_account_url,
        )
    )
    if not args.check:
        sys.stdout.write(render_zone(records))
        return 0
    findings = compare_records(records, lookup_all(resolver, group_records(records)))
    sys.stdout.write(render_findings(findings))
    return 1 if any(f.status != "ok" for f in findings if f.required) else 0


if __name__ == "__main__":
    sys.exit(main())
