"""The benchmark runs and reports every figure (short run; the figures themselves are not judged,
except the memory bound that the daemon must keep)."""

from __future__ import annotations

import re

from chatmaild import bench


def test_bench_doveauth_reports_figures(tmp_path, capsys):
    assert bench.main(["--seconds", "0.3", "doveauth"]) == 0
    out = capsys.readouterr().out
    for figure in ("1 connection", "8 connections", "creations/s", "RSS"):
        assert re.search(rf"{figure}.*: [0-9]", out), out
    rss_after = float(re.search(r"RSS .*: [0-9.]+ / ([0-9.]+) /", out).group(1))
    assert rss_after < 40


def test_bench_rejects_unknown_names(capsys):
    try:
        bench.main(["nosuchbench"])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("no error for an unknown benchmark")
    assert "unknown benchmark" in capsys.readouterr().err
