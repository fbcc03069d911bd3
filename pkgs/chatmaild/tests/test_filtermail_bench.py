"""The filtermail benchmark runs and reports every figure (short run; figures are not judged except
that filtermail accepted mail and kept its memory bounded)."""

from __future__ import annotations

import re

from chatmaild import bench


def test_bench_filtermail_reports_figures(capsys):
    assert bench.main(["--seconds", "0.3", "filtermail"]) == 0
    out = capsys.readouterr().out
    for clients in (1, 8):
        rate = re.search(rf"10 KB, {clients} client\(s\) \(sink alone\): ([0-9,]+) \(", out)
        assert rate and int(rate.group(1).replace(",", "")) > 0, out
    assert re.search(r"one 10 KB message .*: [0-9.]+ / [0-9.]+", out), out
    assert re.search(r"one 10 MB message .*: [0-9]+ / [0-9]+", out), out
    rss_after = float(re.search(r"filtermail RSS .*: [0-9.]+ / ([0-9.]+) /", out).group(1))
    assert rss_after < 60
