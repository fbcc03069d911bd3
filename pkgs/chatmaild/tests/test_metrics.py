"""chatmail-metrics: log lines to counters (real lines of Postfix 3.7, Dovecot 2.3 and chatmaild),
the exposition, following files, and the daemon over HTTP with a stand-in for Dovecot's listener."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter as Tally
from pathlib import Path

import pytest

from chatmaild.metrics import (
    COUNTERS,
    FileFollower,
    exposition,
    increments,
    journal_line,
    journal_source,
    without_eof,
)

TIMEOUT = 20.0

# (source, line, counters it moves); lines as the local harness's daemons wrote them
LINES = [
    ("dovecot", "Dec 01 04:54:14 lmtp(ex244b1j5@chat.test)<30183><MQTqHvZSDmvndQAACc4GZA>: Info: "
                "msgid=<179610085425.29740.1793@chat.test>: saved mail to INBOX", {"delivered_mail": 1}),
    ("dovecot", "Dec 01 04:54:14 lmtp(30183): Info: Connect from local", {}),
    ("dovecot", "Dec 01 05:10:02 lmtp(abcdefghi@chat.test)<4711><x>: Info: msgid=<1@chat.test>: "
                "save failed to INBOX: Quota exceeded: the mailbox of the recipient is full (limit 1000K)",
     {"quota_exceeded": 1}),
    ("dovecot", "Dec 01 05:10:03 quota-warning: Error: quota-expire: removed 3 message(s) from a@chat.test",
     {"quota_expire_runs": 1, "quota_expire_removed_files": 3}),
    ("dovecot", "Dec 01 05:10:03 config: Warning: service auth { client_limit=1000 } is lower than required",
     {"warning_count": 1}),
    ("chatmail-expire", "quota-expire: removed 12 message(s) from b@chat.test",
     {"quota_expire_runs": 1, "quota_expire_removed_files": 12}),
    ("postfix", "Dec 01 04:54:14 chat postfix-r1/cleanup[30180]: 6566DEA4001: info: header DKIM-Signature: "
                "v=1; a=rsa-sha256; c=relaxed/simple; d=chat.test; from unknown[127.0.0.1]", {"dkim_signed": 1}),
    ("doveauth", "chatmaild.account_store INFO created account usl88i7gq@chat.test",
     {"created_accounts": 1, "created_nonci_accounts": 1}),
    ("doveauth", "chatmaild.account_store INFO created account ci-abcdef@chat.test",
     {"created_accounts": 1, "created_ci_accounts": 1}),
    ("doveauth", "doveauth WARNING registration rejected: load avg 7.20 > 5.00",
     {"rejected_registrations": 1, "warning_count": 1}),
    ("doveauth", "doveauth INFO not creating 'k3m3@chat.test': localpart must be 9..9 characters long", {}),
    ("postfix", "Dec 01 04:54:15 chat postfix/submission/smtpd[21702]: NOQUEUE: client=unknown[198.18.0.2], "
                "sasl_method=PLAIN, sasl_username=usl88i7gq@chat.test", {"postfix_noqueue": 1}),
    ("postfix", "Dec 01 04:54:15 chat postfix/submission/smtpd[21702]: proxy-reject: END-OF-MESSAGE: 523 "
                "Encryption Needed: Invalid Unencrypted Mail; from=<a@chat.test>", {"postfix_rejects": 1}),
    ("postfix", "Dec 01 06:40:02 chat postfix/submission/smtpd[9613]: 4DBB1EA4001: milter-reject: "
                "END-OF-MESSAGE from unknown[198.18.0.2]: 5.7.1 Encryption Needed: Invalid Unencrypted Mail; "
                "from=<a@chat.test> to=<b@chat.test> proto=ESMTP helo=<client.test>", {"postfix_rejects": 1}),
    ("postfix", "Dec 01 04:54:15 chat postfix/submission/smtpd[21702]: NOQUEUE: reject: RCPT from unknown"
                "[198.18.0.2]: 553 5.7.1 <a@chat.test>: Sender address rejected",
     {"postfix_noqueue": 1, "postfix_rejects": 1}),
    ("postfix", "Dec 01 06:00:00 chat postfix-r1/smtpd[99]: timeout after DATA (0 bytes) from x[1.2.3.4]",
     {"postfix_timeouts": 1}),
    ("postfix", "Dec 01 06:00:00 chat postfix-r1/master[9]: warning: service \"submission\" (587) has "
                "reached its process limit \"5\"", {"warning_count": 1}),
    ("filtermail", "filtermail: Outgoing: Filtering encrypted mail.",
     {"outgoing_encrypted_mail_count": 1, "filtered_outgoing_mail_count": 1}),
    ("filtermail", "filtermail: Outgoing: Filtering unencrypted mail.",
     {"outgoing_unencrypted_mail_count": 1, "filtered_outgoing_mail_count": 1}),
    ("filtermail", "filtermail: Incoming: Filtering encrypted mail.",
     {"incoming_encrypted_mail_count": 1, "filtered_incoming_mail_count": 1}),
    ("filtermail", "filtermail: Incoming: Filtering unencrypted mail.",
     {"incoming_unencrypted_mail_count": 1, "filtered_incoming_mail_count": 1}),
    ("filtermail", "filtermail: Incoming: Filtering mailer-daemon message.",
     {"incoming_mailer_daemon_mail_count": 1, "filtered_incoming_mail_count": 1}),
    ("filtermail", "filtermail: refused: 523 Encryption Needed: Invalid Unencrypted Mail",
     {"rejected_unencrypted_mail_count": 1}),
    # the same words from another source count nothing
    ("postfix", "saved mail to INBOX created account x@y Outgoing: Filtering encrypted mail.", {}),
]


@pytest.mark.parametrize(("source", "line", "expected"), LINES)
def test_each_line_moves_exactly_its_counters(source: str, line: str, expected: dict[str, int]) -> None:
    assert dict(Tally({name: 0 for name in expected}) + _tally(increments(source, line))) == {
        name: amount for name, amount in expected.items() if amount
    }


def _tally(pairs) -> Tally:
    tally: Tally = Tally()
    for name, amount in pairs:
        tally[name] += amount
    return tally


def test_every_counter_has_a_rule_and_a_line_here() -> None:
    moved = {name for _, line, expected in LINES for name in expected if expected[name]}
    assert moved == {c.name for c in COUNTERS}


def test_journal_entries() -> None:
    assert journal_source("postfix/submission/smtpd") == "postfix"
    assert journal_source("postfix-r1/qmgr") == "postfix"
    assert journal_source("dovecot") == "dovecot"
    assert journal_line({"MESSAGE": "Outgoing: Filtering encrypted mail.", "SYSLOG_IDENTIFIER": "filtermail",
                         "_PID": "12"}) == ("filtermail", "filtermail[12]: Outgoing: Filtering encrypted mail.")
    assert journal_line({"MESSAGE": [255, 0, 1], "SYSLOG_IDENTIFIER": "postfix/smtpd"}) is None
    assert journal_line({"MESSAGE": "no identifier"}) is None


def test_exposition_lists_every_counter_with_help_and_type() -> None:
    text = exposition({"delivered_mail": 7})
    assert "# TYPE delivered_mail counter\ndelivered_mail 7\n" in text
    assert "\nquota_exceeded 0\n" in text
    assert text.count("# HELP ") == text.count("# TYPE ") == len(COUNTERS)


def test_dovecots_eof_is_dropped() -> None:
    assert without_eof("# TYPE x counter\nx_total 1\n# EOF\n") == "# TYPE x counter\nx_total 1\n"


def test_file_follower_starts_at_the_end_and_follows_rotation_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "postfix.log"
    path.write_text("before the start\n")
    follower = FileFollower("postfix", path)
    assert follower.lines() == []
    with path.open("a") as f:
        f.write("one\ntwo without end")
    assert follower.lines() == ["one"]
    with path.open("a") as f:
        f.write(" yet\n")
    assert follower.lines() == ["two without end yet"]
    path.rename(tmp_path / "postfix.log.1")
    path.write_text("after rotation\n")
    assert follower.lines() == ["after rotation"]
    path.write_text("")
    assert follower.lines() == []
    path.write_text("after truncation\n")
    assert follower.lines() == ["after truncation"]
    missing = FileFollower("dovecot", tmp_path / "later.log")
    assert missing.lines() == []
    (tmp_path / "later.log").write_text("first line of a new file\n")
    assert missing.lines() == ["first line of a new file"]


# --- the daemon


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeDovecotStats(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"# HELP dovecot_auth_requests Total\n# TYPE dovecot_auth_requests counter\n" \
               b"dovecot_auth_requests_total{success=\"yes\"} 4\n# EOF\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.read().decode()


def value(text: str, name: str) -> int:
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return int(line.split()[1])


def wait_for(condition, what: str):
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            result = condition()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {TIMEOUT:.0f}s: {what}")
        time.sleep(0.1)


def test_daemon_counts_appended_lines_and_passes_dovecots_metrics_on(make_ini, tmp_path: Path) -> None:
    stats = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeDovecotStats)
    threading.Thread(target=stats.serve_forever, daemon=True).start()
    logs = {name: tmp_path / f"{name}.log" for name in ("postfix", "dovecot", "filtermail")}
    logs["postfix"].write_text("Dec 01 chat postfix/smtpd[1]: NOQUEUE: before the start\n")
    port = free_port()
    command = [sys.executable, "-m", "chatmaild.metrics", str(make_ini()), "--port", str(port),
               "--dovecot-stats", f"http://127.0.0.1:{stats.server_address[1]}/metrics"]
    command += [arg for name, path in logs.items() for arg in ("--log", f"{name}={path}")]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        first = wait_for(lambda: scrape(port), "the first scrape")
        assert value(first, "postfix_noqueue") == 0 and value(first, "delivered_mail") == 0
        assert 'dovecot_auth_requests_total{success="yes"} 4' in first and "# EOF" not in first
        assert value(first, "dovecot_stats_up") == 1
        with logs["dovecot"].open("a") as f:
            f.write("Dec 01 lmtp(a@chat.test)<1><x>: Info: msgid=<1@x>: saved mail to INBOX\n" * 3)
        with logs["filtermail"].open("a") as f:
            f.write("filtermail: Outgoing: Filtering encrypted mail.\n")
        # each log file has a follower of its own: wait until both files' lines are counted
        counted = lambda text: value(text, "delivered_mail") == 3 and value(text, "outgoing_encrypted_mail_count") == 1
        wait_for(lambda: counted(scrape(port)), "three deliveries and one encrypted mail counted")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5):
            pass
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert error.value.code == 404
        stats.shutdown()
        stats.server_close()
        assert value(scrape(port), "dovecot_stats_up") == 0
        assert value(scrape(port), "dovecot_stats_up") == 0
    finally:
        process.terminate()
        process.wait(TIMEOUT)
        stats.server_close()
    log = process.stderr.read() if process.stderr else ""
    assert process.returncode == 0, log
    assert log.count("cannot read Dovecot's metrics") == 1, log  # when it starts, not each scrape


def test_daemon_refuses_a_bad_log_option(make_ini) -> None:
    result = subprocess.run([sys.executable, "-m", "chatmaild.metrics", str(make_ini()), "--log", "nofile"],
                            capture_output=True, text=True, timeout=TIMEOUT,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 2 and "SOURCE=FILE" in result.stderr
