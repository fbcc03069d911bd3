"""scripts/bench --quick --runs 1 --json runs (its own relays) and ends with the JSON object tools read:
every key present, every figure a number. No timing thresholds: figures are the benchmark's job."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys

from harness_lib import REPO

NUMBER_KEYS = ("delivery_p50_ms", "delivery_p95_ms", "e2e_msgs_per_s", "nofilter_msgs_per_s",
               "e2e_ratio_vs_nofilter", "doveauth_lookups_per_s", "filtermail_msgs_per_s",
               "idle_notification_p50_ms", "cross_relay_p50_ms", "cross_relay_p95_ms",
               "cross_relay_idle_p50_ms", "cross_relay_p50_ms_after_idle", "noreuse_cross_relay_p50_ms",
               "deltachat_same_relay_p50_ms", "deltachat_cross_relay_p50_ms", "dovecot_cpu_ms_per_msg",
               "dovecot_cpu_ms_per_msg_100_idle")
DAEMONS = ("doveauth", "filtermail", "filtermail-incoming")


def test_bench_quick_json_has_every_figure() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "bench"), "--quick", "--runs", "1", "--json"],
                            capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    print(result.stderr[-3000:])
    print(result.stdout)
    assert result.returncode == 0, result.stderr[-5000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in NUMBER_KEYS:
        assert isinstance(figures[key], (int, float)) and figures[key] > 0, (key, figures[key])
    for daemon in DAEMONS:
        assert isinstance(figures["rss_mb"][daemon], (int, float)) and figures["rss_mb"][daemon] > 0, figures["rss_mb"]
    assert "raised" in result.stderr + result.stdout  # the benchmark says it raised the send rate
    # CPU per message of each kind of process, Postfix's included, for both relays
    for relay in ("bench.test", "nofilter.test"):
        processes = figures["process_cpu_ms_per_msg"][relay]
        for name in ("postfix/smtpd", "postfix/cleanup", "dovecot/lmtp"):
            assert isinstance(processes[name], (int, float)), (relay, processes)
    assert figures["process_cpu_ms_per_msg"]["bench.test"]["filtermail"] > 0
    # which Dovecot ran: the harness's build without the notify delay (scripts/setup)
    assert figures["dovecot_package"] and isinstance(figures["dovecot_without_notify_delay"], bool)
    # Dovecot watched every IDLE session (the bench raised the machine's inotify limit for its run)
    assert figures["inotify_max_user_instances"] >= 8192
    assert figures["idle_sessions_without_inotify"] == 0


def load_bench():
    loader = importlib.machinery.SourceFileLoader("bench_script", str(REPO / "scripts" / "bench"))
    spec = importlib.util.spec_from_loader("bench_script", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_script"] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


def test_nofilter_relay_keeps_every_milter_but_filtermail() -> None:
    bench = load_bench()
    args = ["-o", "syslog_name=postfix/submission", "-o",
            "smtpd_milters=unix:/r/filtermail.sock,unix:/r/opendkim.sock", "-o", "smtpd_sasl_auth_enable=yes"]
    assert bench.without_filtermail(args) == [
        "-o", "syslog_name=postfix/submission", "-o", "smtpd_milters=unix:/r/opendkim.sock",
        "-o", "smtpd_sasl_auth_enable=yes"]
    assert bench.without_filtermail(["-o", "smtpd_milters=unix:/r/filtermail.sock", "-o", "a=b"]) == ["-o", "a=b"]


def test_cpu_by_label_counts_new_processes_in_full_and_reused_pids_afresh() -> None:
    bench = load_bench()
    before = {1: ("postfix/smtpd", 2.0), 2: ("postfix/cleanup", 1.0), 3: ("filtermail", 5.0)}
    after = {1: ("postfix/smtpd", 2.5), 2: ("dovecot/lmtp", 0.25), 4: ("postfix/smtpd", 0.5), 3: ("filtermail", 5.0)}
    assert bench.cpu_by_label(before, after) == {"postfix/smtpd": 1.0, "dovecot/lmtp": 0.25, "filtermail": 0.0}


def test_json_reports_the_idle_sessions_dovecot_could_not_watch() -> None:
    bench = load_bench()
    label = f"{bench.FILTERED} {bench.IDLE_SESSIONS} IDLE sessions: sessions without inotify"
    figures = bench.result_json({label: [0.0, 96.0, 3.0]}, None, {})
    assert figures["idle_sessions_without_inotify"] == 96.0


def test_inotify_limit_is_raised_for_the_run_and_set_back(tmp_path) -> None:
    bench = load_bench()
    setting = tmp_path / "max_user_instances"
    setting.write_text("128\n")
    with bench.inotify_instances_at_least(8192, setting) as used:
        assert used == 8192 and setting.read_text().strip() == "8192"
    assert setting.read_text().strip() == "128"
    setting.write_text("524288\n")  # a machine that has more keeps it
    with bench.inotify_instances_at_least(8192, setting) as used:
        assert used == 524288
    assert setting.read_text().strip() == "524288"
