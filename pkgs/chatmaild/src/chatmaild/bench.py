"""Benchmarks of the chatmaild daemons: ``python -m chatmaild.bench [--seconds S] [NAME ...]``.

Each benchmark is a function ``bench_<name>(workdir, seconds) -> dict[str, str]`` registered in
BENCHMARKS; it starts its daemon as a subprocess in ``workdir`` and returns figures to print.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .dictproto import passdb_key, request_line
from .testmail import armor, make_encrypted_message, make_openpgp_payload, to_bytes

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


# --- filtermail: outgoing mode between SMTP clients and a sink standing in for Postfix


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _DiscardingSink:
    """Accepts everything; advertises PIPELINING as Postfix does."""

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
        session.host_name = hostname
        responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        return "250 OK"


def _run_sink(port: int, ready: Any) -> None:
    from aiosmtpd.controller import Controller

    from .filtermail import FilterSMTP

    class SinkController(Controller):
        # filtermail's block-wise DATA reader: the sink must not be the bottleneck (Postfix is C)
        def factory(self) -> FilterSMTP:
            return FilterSMTP(self.handler, **self.SMTP_kwargs)

    SinkController(_DiscardingSink(), hostname="127.0.0.1", port=port, server_hostname="sink", data_size_limit=None).start()
    ready.set()
    while True:
        time.sleep(3600)


def _send_loop(port: int, sender: str, data: bytes, seconds: float) -> int:
    """One message per SMTP connection, as Postfix's smtpd_proxy_filter does; return how many."""
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test", timeout=60) as client:
            client.sendmail(sender, ["bob@example.org"], data)
        done += 1
    return done


def _messages_per_second(server_pid: int | None, port: int, clients: int, seconds: float) -> tuple[float, float]:
    """(accepted messages per second, server CPU milliseconds per message) for 10 KB messages."""
    senders = [f"bench{i}@{MAIL_DOMAIN}" for i in range(clients)]
    jobs = [(port, s, to_bytes(make_encrypted_message(s, "bob@example.org", payload_size=7000)), seconds) for s in senders]
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
        started = time.monotonic()
        count = sum(pool.starmap(_send_loop, jobs))
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(server_pid) - cpu_before if server_pid else 0.0
    return count / elapsed, cpu / count * 1000


def _median_send_ms(port: int, sender: str, data: bytes, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test", timeout=60) as client:
            client.sendmail(sender, ["bob@example.org"], data)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def bench_filtermail(workdir: Path, seconds: float) -> dict[str, str]:
    context = multiprocessing.get_context("fork")
    sink_port, port = _free_port(), _free_port()
    ready = context.Event()
    sink = context.Process(target=_run_sink, args=(sink_port, ready), daemon=True)
    sink.start()
    inipath = workdir / "chatmail.ini"
    inipath.write_text(
        f"[params]\nmail_domain = {MAIL_DOMAIN}\nmailboxes_dir = {workdir}/mail\n"
        f"filtermail_smtp_port = {port}\npostfix_reinject_port = {sink_port}\n"
        "max_user_send_per_minute = 1000000\nmax_user_send_burst_size = 1000000\n"
    )
    with (workdir / "filtermail.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatmaild.filtermail", str(inipath), "outgoing"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
    try:
        deadline = time.monotonic() + 10
        while not (ready.is_set() and _tcp_accepts(port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"filtermail or the sink did not start:\n{(workdir / 'filtermail.log').read_text()}")
            time.sleep(0.02)
        idle_rss, _ = rss_kib(proc.pid)
        sender = f"latency@{MAIL_DOMAIN}"
        small = to_bytes(make_encrypted_message(sender, "bob@example.org", payload_size=7000))
        # armor without checksum: computing the CRC24 of 7.5 MB in Python takes a second (filtermail
        # does not compute it either)
        big_armor = armor(make_openpgp_payload(7_500_000), checksum=False)
        big = to_bytes(make_encrypted_message(sender, "bob@example.org", armored=big_armor))
        direct = {n: _messages_per_second(None, sink_port, n, seconds)[0] for n in (1, 8)}
        filtered = {n: _messages_per_second(proc.pid, port, n, seconds) for n in (1, 8)}
        small_ms = (_median_send_ms(port, sender, small, 50), _median_send_ms(sink_port, sender, small, 50))
        big_ms = (_median_send_ms(port, sender, big, 3), _median_send_ms(sink_port, sender, big, 3))
        rss, peak = rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
        sink.kill()
        sink.join(10)
    figures = {"filtermail rate limit for the benchmark": "raised to 1000000/min (the default 60/min, burst 10, caps one sender)"}
    for n in (1, 8):
        rate, cpu_ms = filtered[n]
        figures[f"filtermail accepted msgs/s, 10 KB, {n} client(s) (sink alone)"] = (
            f"{rate:,.0f} ({direct[n]:,.0f}); {cpu_ms:.2f} ms filtermail CPU each"
        )
    figures[f"filtermail one 10 KB message ({len(small):,} B), ms via filtermail / sink alone"] = f"{small_ms[0]:.1f} / {small_ms[1]:.1f}"
    figures[f"filtermail one 10 MB message ({len(big):,} B), ms via filtermail / sink alone"] = f"{big_ms[0]:.0f} / {big_ms[1]:.0f}"
    figures["filtermail RSS idle / after benchmark / peak (MiB)"] = f"{idle_rss / 1024:.1f} / {rss / 1024:.1f} / {peak / 1024:.1f}"
    return figures


def _tcp_accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


# name -> benchmark; add further daemons here (e.g. "filtermail": bench_filtermail)
BENCHMARKS: dict[str, Callable[[Path, float], dict[str, str]]] = {
    "doveauth": bench_doveauth,
    "filtermail": bench_filtermail,
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
