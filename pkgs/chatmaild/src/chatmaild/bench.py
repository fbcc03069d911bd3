"""Benchmarks of the chatmaild daemons: ``python -m chatmaild.bench [--seconds S] [NAME ...]``.

Each benchmark is a function ``bench_<name>(workdir, seconds) -> dict[str, str]`` registered in
BENCHMARKS; it starts its daemon as a subprocess in ``workdir`` and returns figures to print.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .dictproto import passdb_key, request_line

MAIL_DOMAIN = "bench.example.org"
PASSWORD = "benchpassword"


def start_doveauth(socket_path: Path, inipath: Path, log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``python -m chatmaild.doveauth`` and wait (at most 10 s) until it serves."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatmaild.doveauth", str(socket_path), str(inipath)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
        )
    deadline = time.monotonic() + 10
    while not (_accepts(socket_path) and "listening on" in log_path.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"doveauth did not start:\n{log_path.read_text()}")
        time.sleep(0.02)
    return proc


def _accepts(socket_path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(socket_path))
        except OSError:
            return False
    return True


def rss_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of ``pid`` in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lookup_loop(socket_path: str, requests: list[bytes], seconds: float) -> int:
    """Send lookups one at a time (as Dovecot's auth does) for ``seconds``; return how many."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(socket_path)
        s.sendall(request_line("H", "3", "2", "0", "", "auth"))
        reader = s.makefile("rb")
        done = 0
        deadline = time.monotonic() + seconds
        for request in itertools.cycle(requests):
            s.sendall(request)
            if not reader.readline().startswith(b"O"):
                raise RuntimeError("lookup failed")
            done += 1
            if done % 100 == 0 and time.monotonic() > deadline:
                return done
        raise AssertionError("unreachable: cycle() never ends")


def _lookups_per_second(server_pid: int, socket_path: Path, requests: list[bytes], connections: int, seconds: float) -> tuple[float, float]:
    """(lookups per second, server CPU microseconds per lookup)."""
    # one client process per connection, so the clients are not serialised by one GIL
    with multiprocessing.get_context("fork").Pool(connections) as pool:
        cpu_before = cpu_seconds(server_pid)
        started = time.monotonic()
        counts = pool.starmap(_lookup_loop, [(str(socket_path), requests, seconds)] * connections)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(server_pid) - cpu_before
    return sum(counts) / elapsed, cpu / sum(counts) * 1e6


def _create(socket_path: Path, addrs: list[str]) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(socket_path))
        reader = s.makefile("rb")
        for addr in addrs:
            s.sendall(request_line("L", passdb_key(addr, PASSWORD), addr))
            if not reader.readline().startswith(b"O"):
                raise RuntimeError(f"creating {addr} failed")


def bench_doveauth(workdir: Path, seconds: float) -> dict[str, str]:
    inipath = workdir / "chatmail.ini"
    inipath.write_text(f"[params]\nmail_domain = {MAIL_DOMAIN}\nmailboxes_dir = {workdir}/mail\n")
    socket_path = workdir / "doveauth.socket"
    env = dict(os.environ, CHATMAIL_NOCREATE_PATH=str(workdir / "nocreate"))
    proc = start_doveauth(socket_path, inipath, workdir / "doveauth.log", env)
    try:
        idle_rss, _ = rss_kib(proc.pid)
        addrs = [f"bench{i:04d}@{MAIL_DOMAIN}" for i in range(400)]
        connections = 8
        started = time.monotonic()
        with ThreadPoolExecutor(connections) as pool:
            list(pool.map(lambda i: _create(socket_path, addrs[i::connections]), range(connections)))
        creations = len(addrs) / (time.monotonic() - started)
        requests = [request_line("L", passdb_key(addr, PASSWORD), addr) for addr in addrs]
        single, single_cpu = _lookups_per_second(proc.pid, socket_path, requests, 1, seconds)
        eight, eight_cpu = _lookups_per_second(proc.pid, socket_path, requests, 8, seconds)
        rss, peak = rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        "doveauth passdb lookups/s, existing accounts, 1 connection": f"{single:,.0f} ({single_cpu:.1f} µs server CPU each)",
        "doveauth passdb lookups/s, existing accounts, 8 connections": f"{eight:,.0f} ({eight_cpu:.1f} µs server CPU each)",
        f"doveauth account creations/s ({len(addrs)} accounts, {connections} connections)": f"{creations:,.0f}",
        "doveauth RSS idle / after benchmark / peak (MiB)": f"{idle_rss / 1024:.1f} / {rss / 1024:.1f} / {peak / 1024:.1f}",
    }


# name -> benchmark; add further daemons here (e.g. "filtermail": bench_filtermail)
BENCHMARKS: dict[str, Callable[[Path, float], dict[str, str]]] = {
    "doveauth": bench_doveauth,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatmaild.bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each throughput run (default 3)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    for name in args.names or BENCHMARKS:
        with tempfile.TemporaryDirectory(prefix=f"chatmaild-bench-{name}-") as workdir:
            for figure, value in BENCHMARKS[name](Path(workdir), args.seconds).items():
                print(f"{figure}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
