"""Benchmarks of the chatmaild daemons: ``python -m chatmaild.bench [--seconds S] [NAME ...]``.

Each benchmark is a function ``bench_<name>(workdir, seconds) -> dict[str, str]`` registered in
BENCHMARKS; it starts its daemon as a subprocess in ``workdir`` and returns figures to print.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import random
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
# send rate limit for throughput runs (the default 60/min, burst 10, caps one sender)
RAISED_SEND_RATE = 1_000_000


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


def populate_accounts(mailboxes_dir: Path, domain: str, count: int) -> list[str]:
    """``count`` accounts written straight to disk in doveauth's layout (one shared hash): far
    faster than creating them through doveauth, for measuring lookups among many accounts.
    Nothing is written if an earlier call wrote them already."""
    from .passwords import hash_password

    password_hash = hash_password(PASSWORD).encode("ascii")
    addrs = [f"pre{i:07d}@{domain}" for i in range(count)]
    if addrs and (mailboxes_dir / addrs[-1] / "password").exists():
        return addrs  # written by an earlier call
    for addr in addrs:
        maildir = mailboxes_dir / addr
        maildir.mkdir(parents=True, exist_ok=True)
        (maildir / "password").write_bytes(password_hash)
    return addrs


def measure_doveauth(workdir: Path, seconds: float, existing_accounts: int = 0, connections: tuple[int, ...] = (1, 8)) -> dict[str, float]:
    """Numbers: ``creations_per_s`` (400 new accounts over 8 connections), per connection count n
    ``lookups_per_s_{n}`` and ``lookup_cpu_us_{n}`` (lookups cycle through every account, so with
    ``existing_accounts`` pre-made ones most miss the cache), ``rss_idle_mb``, ``rss_mb``, ``rss_peak_mb``."""
    inipath = workdir / "chatmail.ini"
    # max_load_1m: measured is doveauth, not whether the machine is busy
    inipath.write_text(f"[params]\nmail_domain = {MAIL_DOMAIN}\nmailboxes_dir = {workdir}/mail\nmax_load_1m = 1000\n")
    existing = populate_accounts(workdir / "mail", MAIL_DOMAIN, existing_accounts)
    socket_path = workdir / "doveauth.socket"
    env = dict(os.environ, CHATMAIL_NOCREATE_PATH=str(workdir / "nocreate"))
    proc = start_doveauth(socket_path, inipath, workdir / "doveauth.log", env)
    figures: dict[str, float] = {}
    try:
        figures["rss_idle_mb"] = rss_kib(proc.pid)[0] / 1024
        addrs = [f"bench{i:04d}@{MAIL_DOMAIN}" for i in range(400)]
        creators = 8
        started = time.monotonic()
        with ThreadPoolExecutor(creators) as pool:
            list(pool.map(lambda i: _create(socket_path, addrs[i::creators]), range(creators)))
        figures["creations_per_s"] = len(addrs) / (time.monotonic() - started)
        requests = [request_line("L", passdb_key(addr, PASSWORD), addr) for addr in existing + addrs]
        random.Random(0).shuffle(requests)
        for n in connections:
            figures[f"lookups_per_s_{n}"], figures[f"lookup_cpu_us_{n}"] = _lookups_per_second(proc.pid, socket_path, requests, n, seconds)
        rss, peak = rss_kib(proc.pid)
        figures["rss_mb"], figures["rss_peak_mb"] = rss / 1024, peak / 1024
    finally:
        proc.terminate()
        proc.wait(10)
    return figures


def bench_doveauth(workdir: Path, seconds: float) -> dict[str, str]:
    f = measure_doveauth(workdir, seconds)
    return {
        "doveauth passdb lookups/s, existing accounts, 1 connection": f"{f['lookups_per_s_1']:,.0f} ({f['lookup_cpu_us_1']:.1f} µs server CPU each)",
        "doveauth passdb lookups/s, existing accounts, 8 connections": f"{f['lookups_per_s_8']:,.0f} ({f['lookup_cpu_us_8']:.1f} µs server CPU each)",
        "doveauth account creations/s (400 accounts, 8 connections)": f"{f['creations_per_s']:,.0f}",
        "doveauth RSS idle / after benchmark / peak (MiB)": f"{f['rss_idle_mb']:.1f} / {f['rss_mb']:.1f} / {f['rss_peak_mb']:.1f}",
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


def measure_filtermail(workdir: Path, seconds: float) -> dict[str, float]:
    """Numbers, filtermail (outgoing) in front of a discarding sink: per client count n
    ``msgs_per_s_{n}``, ``cpu_ms_{n}`` and ``sink_msgs_per_s_{n}`` (the sink alone); median ms for one
    message through filtermail / the sink alone: ``small_ms``, ``small_sink_ms`` (10 KB),
    ``big_ms``, ``big_sink_ms`` (10 MB); ``rss_idle_mb``, ``rss_mb``, ``rss_peak_mb``."""
    context = multiprocessing.get_context("fork")
    sink_port, port = _free_port(), _free_port()
    ready = context.Event()
    sink = context.Process(target=_run_sink, args=(sink_port, ready), daemon=True)
    sink.start()
    inipath = workdir / "chatmail.ini"
    inipath.write_text(
        f"[params]\nmail_domain = {MAIL_DOMAIN}\nmailboxes_dir = {workdir}/mail\n"
        f"filtermail_smtp_port = {port}\npostfix_reinject_port = {sink_port}\n"
        f"max_user_send_per_minute = {RAISED_SEND_RATE}\nmax_user_send_burst_size = {RAISED_SEND_RATE}\n"
    )
    with (workdir / "filtermail.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatmaild.filtermail", str(inipath), "outgoing"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
    figures: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 10
        while not (ready.is_set() and _tcp_accepts(port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"filtermail or the sink did not start:\n{(workdir / 'filtermail.log').read_text()}")
            time.sleep(0.02)
        figures["rss_idle_mb"] = rss_kib(proc.pid)[0] / 1024
        sender = f"latency@{MAIL_DOMAIN}"
        small = to_bytes(make_encrypted_message(sender, "bob@example.org", payload_size=7000))
        # armor without checksum: computing the CRC24 of 7.5 MB in Python takes a second (filtermail
        # does not compute it either)
        big_armor = armor(make_openpgp_payload(7_500_000), checksum=False)
        big = to_bytes(make_encrypted_message(sender, "bob@example.org", armored=big_armor))
        figures["small_bytes"], figures["big_bytes"] = len(small), len(big)
        for n in (1, 8):
            figures[f"sink_msgs_per_s_{n}"] = _messages_per_second(None, sink_port, n, seconds)[0]
            figures[f"msgs_per_s_{n}"], figures[f"cpu_ms_{n}"] = _messages_per_second(proc.pid, port, n, seconds)
        figures["small_ms"] = _median_send_ms(port, sender, small, 50)
        figures["small_sink_ms"] = _median_send_ms(sink_port, sender, small, 50)
        figures["big_ms"] = _median_send_ms(port, sender, big, 3)
        figures["big_sink_ms"] = _median_send_ms(sink_port, sender, big, 3)
        rss, peak = rss_kib(proc.pid)
        figures["rss_mb"], figures["rss_peak_mb"] = rss / 1024, peak / 1024
    finally:
        proc.terminate()
        proc.wait(10)
        sink.kill()
        sink.join(10)
    return figures


def _milter_loop(socket_path: str, sender: str, data: bytes, seconds: float) -> int:
    """One message per milter connection (Postfix opens one per SMTP session); return how many
    were accepted."""
    from .milter import MilterClient

    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        client = MilterClient(socket_path, timeout=60)
        if not client.transaction(sender, ["bob@example.org"], data, login=sender).accepted:
            raise RuntimeError("the milter refused a benchmark message")
        client.close()
        done += 1
    return done


def milter_messages_per_second(server_pid: int, socket_path: str, clients: int, seconds: float) -> tuple[float, float]:
    """(messages per second, server CPU milliseconds per message) of a milter on ``socket_path``
    for 10 KB encrypted messages, ``clients`` connections at a time."""
    senders = [f"bench{i}@{MAIL_DOMAIN}" for i in range(clients)]
    jobs = [(socket_path, s, to_bytes(make_encrypted_message(s, "bob@example.org", payload_size=7000)), seconds)
            for s in senders]
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        cpu_before = cpu_seconds(server_pid)
        started = time.monotonic()
        count = sum(pool.starmap(_milter_loop, jobs))
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(server_pid) - cpu_before
    return count / elapsed, cpu / count * 1000


def wait_for_unix_socket(path: Path, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(path))
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the milter did not start:\n{log.read_text()}") from None
            time.sleep(0.02)


def measure_filtermail_milter(workdir: Path, seconds: float) -> dict[str, float]:
    """filtermail's outgoing milter (as submission uses it): ``msgs_per_s_{n}`` and ``cpu_ms_{n}``
    for n = 1 and 8 connections at a time."""
    inipath = workdir / "chatmail.ini"
    inipath.write_text(
        f"[params]\nmail_domain = {MAIL_DOMAIN}\nmailboxes_dir = {workdir}/mail\n"
        f"max_user_send_per_minute = {RAISED_SEND_RATE}\nmax_user_send_burst_size = {RAISED_SEND_RATE}\n"
    )
    socket_path, log = workdir / "filtermail.sock", workdir / "filtermail-milter.log"
    with log.open("ab") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatmaild.filtermail", str(inipath), "outgoing-milter", str(socket_path)],
            stdin=subprocess.DEVNULL, stdout=output, stderr=output,
        )
    figures: dict[str, float] = {}
    try:
        wait_for_unix_socket(socket_path, proc, log)
        for n in (1, 8):
            figures[f"msgs_per_s_{n}"], figures[f"cpu_ms_{n}"] = milter_messages_per_second(
                proc.pid, str(socket_path), n, seconds)
    finally:
        proc.terminate()
        proc.wait(10)
    return figures


def bench_filtermail(workdir: Path, seconds: float) -> dict[str, str]:
    f = measure_filtermail(workdir, seconds)
    figures = {"filtermail rate limit for the benchmark": f"raised to {RAISED_SEND_RATE}/min (the default 60/min, burst 10, caps one sender)"}
    for n in (1, 8):
        figures[f"filtermail accepted msgs/s, 10 KB, {n} client(s) (sink alone)"] = (
            f"{f[f'msgs_per_s_{n}']:,.0f} ({f[f'sink_msgs_per_s_{n}']:,.0f}); {f[f'cpu_ms_{n}']:.2f} ms filtermail CPU each"
        )
    figures[f"filtermail one 10 KB message ({f['small_bytes']:,.0f} B), ms via filtermail / sink alone"] = f"{f['small_ms']:.1f} / {f['small_sink_ms']:.1f}"
    figures[f"filtermail one 10 MB message ({f['big_bytes']:,.0f} B), ms via filtermail / sink alone"] = f"{f['big_ms']:.0f} / {f['big_sink_ms']:.0f}"
    figures["filtermail RSS idle / after benchmark / peak (MiB)"] = f"{f['rss_idle_mb']:.1f} / {f['rss_mb']:.1f} / {f['rss_peak_mb']:.1f}"
    m = measure_filtermail_milter(workdir, seconds)
    for n in (1, 8):
        figures[f"filtermail milter msgs/s, 10 KB, {n} connection(s)"] = (
            f"{m[f'msgs_per_s_{n}']:,.0f}; {m[f'cpu_ms_{n}']:.2f} ms filtermail CPU each")
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
