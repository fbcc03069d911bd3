"""scripts/bench --quick --json runs (its own relays) and ends with the JSON object tools read:
every key present, every figure a number. No timing thresholds: figures are the benchmark's job."""

from __future__ import annotations

import json
import subprocess
import sys

from harness_lib import REPO

NUMBER_KEYS = ("delivery_p50_ms", "delivery_p95_ms", "e2e_msgs_per_s", "nofilter_msgs_per_s",
               "e2e_ratio_vs_nofilter", "doveauth_lookups_per_s", "filtermail_msgs_per_s")
DAEMONS = ("doveauth", "filtermail", "filtermail-incoming")


def test_bench_quick_json_has_every_figure() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "bench"), "--quick", "--json"],
                            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    print(result.stderr[-3000:])
    print(result.stdout)
    assert result.returncode == 0, result.stderr[-5000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in NUMBER_KEYS:
        assert isinstance(figures[key], (int, float)) and figures[key] > 0, (key, figures[key])
    for daemon in DAEMONS:
        assert isinstance(figures["rss_mb"][daemon], (int, float)) and figures["rss_mb"][daemon] > 0, figures["rss_mb"]
    assert "raised" in result.stderr + result.stdout  # the benchmark says it raised the send rate
