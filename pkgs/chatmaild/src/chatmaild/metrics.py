"""chatmail-metrics: one Prometheus scrape endpoint per relay.

Usage: ``chatmail-metrics INI --address ADDR --port PORT [--dovecot-stats URL]
(--journal | --log SOURCE=FILE ...)``

``GET /metrics`` answers with the counters below (Prometheus text format 0.0.4), followed by what
Dovecot's own OpenMetrics listener (its stats service, ``--dovecot-stats``) reports at that moment.

The counters come from the relay's log lines, as upstream's mtail program counts them, with
upstream's names: the daemons' lines are read from the systemd journal (``--journal``: the
syslog identifier tells the source, e.g. ``postfix/smtpd`` is ``postfix``) or from log files
(``--log postfix=/var/log/postfix.log``, as the local harness runs them). Counting starts with the
lines written after the start; a restart begins at 0 again, which Prometheus' ``rate()`` handles.
Sources: ``postfix``, ``dovecot`` (also the quota-warning script), ``doveauth``, ``filtermail``,
``chatmail-expire``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .config import ConfigError, read_config

log = logging.getLogger("chatmail-metrics")

POLL_SECONDS = 0.5
DOVECOT_STATS_TIMEOUT = 2.0
JOURNAL_RESTART_SECONDS = 5.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# --- rules (pure): which log line moves which counter


@dataclass(frozen=True)
class Counter:
    name: str
    help: str


@dataclass(frozen=True)
class Rule:
    sources: frozenset[str] | None  # None: lines of any source
    pattern: re.Pattern[str]
    counters: tuple[str, ...]  # each grows by 1
    sum_counter: str | None = None  # grows by the number in the pattern's first group


COUNTERS = [
    Counter("delivered_mail", "Messages Dovecot saved into a mailbox (LMTP)."),
    Counter("quota_exceeded", "Deliveries Dovecot refused because the mailbox was full."),
    Counter("quota_expire_runs", "Times old messages were removed to make room (quota warning or daily expiry)."),
    Counter("quota_expire_removed_files", "Messages removed to make room in full mailboxes."),
    Counter("dkim_signed", "Outgoing messages DKIM-signed (OpenDKIM added a DKIM-Signature)."),
    Counter("created_accounts", "Accounts doveauth created."),
    Counter("created_ci_accounts", "Accounts created whose name starts with ci- (test accounts)."),
    Counter("created_nonci_accounts", "Accounts created whose name does not start with ci-."),
    Counter("rejected_registrations", "New accounts doveauth refused at a system limit (load, memory, disk)."),
    Counter("postfix_timeouts", "SMTP sessions Postfix ended with a timeout after DATA."),
    Counter("postfix_noqueue", "Postfix log lines with NOQUEUE (sessions that queued nothing, rejects)."),
    Counter("postfix_rejects", "Commands or messages Postfix rejected (NOQUEUE reject, milter-reject)."),
    Counter("warning_count", "Log lines of level warning."),
    Counter("filtered_outgoing_mail_count", "Outgoing messages filtermail accepted."),
    Counter("outgoing_encrypted_mail_count", "Outgoing encrypted (OpenPGP/MIME) messages accepted."),
    Counter("outgoing_unencrypted_mail_count", "Outgoing unencrypted messages accepted (Secure-Join, passthrough)."),
    Counter("filtered_incoming_mail_count", "Incoming messages filtermail accepted."),
    Counter("incoming_encrypted_mail_count", "Incoming encrypted (OpenPGP/MIME) messages accepted."),
    Counter("incoming_unencrypted_mail_count", "Incoming unencrypted messages accepted (Secure-Join, open mailboxes)."),
    Counter("incoming_mailer_daemon_mail_count", "Incoming delivery reports (bounces) accepted."),
    Counter("rejected_unencrypted_mail_count", "Messages filtermail refused as unencrypted (523)."),
]


def rule(sources: str | None, pattern: str, *counters: str, sum_counter: str | None = None) -> Rule:
    return Rule(frozenset(sources.split()) if sources else None, re.compile(pattern), counters, sum_counter)


RULES = [
    rule("dovecot", r"\blmtp\(.*: saved mail to ", "delivered_mail"),
    rule("dovecot", r"\blmtp\(.*Quota exceeded", "quota_exceeded"),
    rule("dovecot chatmail-expire", r"quota-expire: removed ([0-9]+) message\(s\)",
         "quota_expire_runs", sum_counter="quota_expire_removed_files"),
    # Postfix logs the header that OpenDKIM adds (milter_header_checks, rendered by render.nix);
    # OpenDKIM itself logs only to syslog
    rule("postfix", r"info: header DKIM-Signature: ", "dkim_signed"),
    rule("doveauth", r"created account ci-", "created_accounts", "created_ci_accounts"),
    rule("doveauth", r"created account (?!ci-)", "created_accounts", "created_nonci_accounts"),
    rule("doveauth", r"registration rejected: ", "rejected_registrations"),
    rule("postfix", r"timeout after DATA", "postfix_timeouts"),
    rule("postfix", r"NOQUEUE", "postfix_noqueue"),
    rule("postfix", r"NOQUEUE: reject: |milter-reject: |proxy-reject: ", "postfix_rejects"),
    # Postfix "warning:", Dovecot "Warning:", chatmaild "WARNING" (not Dovecot's "quota-warning")
    rule(None, r"(?i)(?<![\w-])warning\b", "warning_count"),
    rule("filtermail", r"Outgoing: Filtering encrypted mail\.", "outgoing_encrypted_mail_count", "filtered_outgoing_mail_count"),
    rule("filtermail", r"Outgoing: Filtering unencrypted mail\.", "outgoing_unencrypted_mail_count", "filtered_outgoing_mail_count"),
    rule("filtermail", r"Incoming: Filtering encrypted mail\.", "incoming_encrypted_mail_count", "filtered_incoming_mail_count"),
    rule("filtermail", r"Incoming: Filtering unencrypted mail\.", "incoming_unencrypted_mail_count", "filtered_incoming_mail_count"),
    rule("filtermail", r"Incoming: Filtering mailer-daemon message\.", "incoming_mailer_daemon_mail_count", "filtered_incoming_mail_count"),
    rule("filtermail", r"refused: 523 ", "rejected_unencrypted_mail_count"),
]


def increments(source: str, line: str) -> Iterator[tuple[str, int]]:
    """The (counter, amount) pairs that one log line of ``source`` adds."""
    for r in RULES:
        if r.sources is not None and source not in r.sources:
            continue
        match = r.pattern.search(line)
        if match:
            for name in r.counters:
                yield name, 1
            if r.sum_counter:
                yield r.sum_counter, int(match.group(1))


def journal_source(identifier: str) -> str:
    """The source of a journal entry by its syslog identifier: ``postfix/smtpd`` and a Postfix
    instance's ``postfix-NAME/qmgr`` are ``postfix``, ``filtermail`` is ``filtermail``."""
    program = identifier.split("/", 1)[0]
    return "postfix" if program.startswith("postfix") else program


def journal_line(entry: dict) -> tuple[str, str] | None:
    """(source, "identifier[pid]: message") of a journalctl JSON entry, None if it has no text."""
    message, identifier = entry.get("MESSAGE"), entry.get("SYSLOG_IDENTIFIER")
    if not isinstance(message, str) or not isinstance(identifier, str):
        return None  # binary messages (journald sends them as byte lists) say nothing to count
    return journal_source(identifier), f"{identifier}[{entry.get('_PID', '')}]: {message}"


def exposition(values: dict[str, int]) -> str:
    """The counters in Prometheus' text format."""
    return "".join(
        f"# HELP {c.name} {c.help}\n# TYPE {c.name} counter\n{c.name} {values.get(c.name, 0)}\n"
        for c in COUNTERS
    )


def without_eof(openmetrics: str) -> str:
    """Dovecot's OpenMetrics text, to follow our counters: without its closing ``# EOF``."""
    return "".join(line + "\n" for line in openmetrics.splitlines() if line.strip() != "# EOF")


# --- counting


class Counts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}

    def add_line(self, source: str, line: str) -> None:
        found = list(increments(source, line))
        if found:
            with self._lock:
                for name, amount in found:
                    self._values[name] = self._values.get(name, 0) + amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


# --- reading logs


class FileFollower:
    """Reads lines appended to a file (as ``tail -F``): from its end when it exists at the start,
    from its beginning when it appears or is replaced (rotation) later, or shrinks (truncation)."""

    def __init__(self, source: str, path: Path) -> None:
        self.source = source
        self.path = path
        self._file = None
        self._inode: int | None = None
        self._partial = b""
        self._open(at_end=True)

    def _open(self, at_end: bool) -> None:
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 (kept open between polls)
        except OSError:
            self._file = None
            return
        self._inode = os.fstat(self._file.fileno()).st_ino
        if at_end:
            self._file.seek(0, os.SEEK_END)
        self._partial = b""

    def _reopen_if_replaced(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            return
        if self._file is None:
            self._open(at_end=False)
        elif st.st_ino != self._inode or st.st_size < self._file.tell():
            self._file.close()
            self._open(at_end=False)

    def lines(self) -> list[str]:
        self._reopen_if_replaced()
        if self._file is None:
            return []
        data = self._partial + self._file.read()
        *complete, self._partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete]


def follow_files(followers: Sequence[FileFollower], counts: Counts, stop: threading.Event) -> None:
    while not stop.is_set():
        for follower in followers:
            for line in follower.lines():
                counts.add_line(follower.source, line)
        stop.wait(POLL_SECONDS)


def follow_journal(counts: Counts, stop: threading.Event) -> None:
    """Count the journal's new entries; journalctl is started again if it ends."""
    command = ["journalctl", "--follow", "--lines=0", "--output=json",
               "--output-fields=MESSAGE,SYSLOG_IDENTIFIER,_PID"]
    while not stop.is_set():
        try:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        except OSError as e:
            log.error("cannot run journalctl: %s", e)
            stop.wait(JOURNAL_RESTART_SECONDS)
            continue
        assert process.stdout is not None
        for raw in process.stdout:
            try:
                parsed = journal_line(json.loads(raw))
            except ValueError:
                continue
            if parsed:
                counts.add_line(*parsed)
        process.wait()
        log.warning("journalctl ended (%s); starting it again", process.returncode)
        stop.wait(JOURNAL_RESTART_SECONDS)


# --- serving


class DovecotStats:
    """Dovecot's metrics at each scrape, and whether they could be read (``dovecot_stats_up``);
    a failure is logged when it starts, not at every scrape."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.up = True

    def read(self) -> str:
        if self.url is None:
            return ""
        try:
            with urllib.request.urlopen(self.url, timeout=DOVECOT_STATS_TIMEOUT) as response:
                text = without_eof(response.read().decode("utf-8", "replace"))
            up = True
        except (OSError, ValueError) as e:
            if self.up:
                log.warning("cannot read Dovecot's metrics at %s: %s", self.url, e)
            text, up = "", False
        self.up = up
        return ("# HELP dovecot_stats_up Whether Dovecot's metrics could be read.\n"
                f"# TYPE dovecot_stats_up gauge\ndovecot_stats_up {int(up)}\n{text}")


def make_handler(render: Callable[[], str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            body = render().encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a scrape every few seconds is no news

    return Handler


def parse_log_option(value: str) -> tuple[str, Path]:
    source, equals, path = value.partition("=")
    if not equals or not source or not path:
        raise argparse.ArgumentTypeError(f"{value!r}: write SOURCE=FILE, e.g. postfix=/var/log/mail.log")
    return source, Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatmail-metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("chatmail_ini")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3903)
    parser.add_argument("--dovecot-stats", metavar="URL", help="Dovecot's OpenMetrics, passed on")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--journal", action="store_true", help="read the systemd journal")
    source.add_argument("--log", action="append", type=parse_log_option, metavar="SOURCE=FILE",
                        help="read a log file of one source (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    try:
        read_config(args.chatmail_ini)  # a broken ini fails here, as it fails the other daemons
    except ConfigError as e:
        log.error("%s", e)
        return 1

    counts = Counts()
    stop = threading.Event()
    if args.journal:
        reader = threading.Thread(target=follow_journal, args=(counts, stop), daemon=True)
    else:
        followers = [FileFollower(name, path) for name, path in args.log]
        reader = threading.Thread(target=follow_files, args=(followers, counts, stop), daemon=True)
    reader.start()

    stats = DovecotStats(args.dovecot_stats)

    def render() -> str:
        return exposition(counts.snapshot()) + stats.read()

    server_class = ThreadingHTTPServer
    if ":" in args.address:
        server_class = type("ThreadingHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
    try:
        server = server_class((args.address, args.port), make_handler(render))
    except OSError as e:
        log.error("cannot listen on %s port %d: %s", args.address, args.port, e)
        return 1
    server.daemon_threads = True
    log.info("serving /metrics on %s port %d", args.address, args.port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
