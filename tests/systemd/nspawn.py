"""A real systemd booted with systemd-nspawn, and commands run inside it with nsenter.

PID 1 of this machine is not systemd, but systemd-nspawn boots one on the Debian root that
scripts/nspawn-root caches: `--register=no --keep-unit` (no machined, no host systemd),
`--volatile=overlay` (the cached root stays as it is: changes go to a tmpfs over it),
`--private-network` (only a loopback of its own). Two settings make the units' confinement
real rather than ignored:

- the unified cgroup hierarchy (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1): this host mounts cgroup v1
  plus v2, and a systemd that runs on v1 ignores IPAddressDeny/IPAddressAllow without a word;
- `--system-call-filter=bpf`: nspawn's own seccomp filter refuses bpf(), which systemd needs to
  attach those IP filters.

The container runs in a cgroup v2 group of its own (nspawn puts its supervisor and payload
groups below its own group, which would collide between concurrent containers), and that group
is what is killed and removed at the end: nothing of the container outlives `stop()`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

BOOT_TIMEOUT = 120
STOP_TIMEOUT = 30


def cgroup2_mount() -> Path:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on hybrid hosts)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    raise RuntimeError("no cgroup v2 hierarchy is mounted")


def own_cgroup2() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return cgroup2_mount() / line[3:].lstrip("/")
    raise RuntimeError("this process is in no cgroup v2 group")


def remove_cgroup_tree(top: Path) -> None:
    """Kill every process in the group and below, then remove the (empty) groups bottom-up."""
    if not top.exists():
        return
    (top / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + STOP_TIMEOUT
    for directory, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
        while True:
            try:
                os.rmdir(directory)
                break
            except OSError:  # EBUSY while the killed processes are still exiting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


class Container:
    """`start()` boots; `run()` runs a command inside (all of the container's namespaces);
    `stop()` powers off, and kills whatever is left."""

    def __init__(self, root: Path, name: str, log: Path, bind_ro: list[tuple[Path, str]]) -> None:
        self.root, self.name, self.log = root, name, log
        self.bind_ro = bind_ro
        self.cgroup = own_cgroup2() / f"chatmail-{name}"
        self.process: subprocess.Popen | None = None
        self.leader = 0  # the container's PID 1, as the host sees it

    def start(self) -> None:
        self.cgroup.mkdir()
        command = [
            "systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--boot",
            f"--directory={self.root}", f"--machine={self.name}", "--volatile=overlay",
            "--private-network", "--system-call-filter=bpf", "--console=read-only",
            *(f"--bind-ro={source}:{target}" for source, target in self.bind_ro),
        ]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                # enter the container's own cgroup first (see the module)
                ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.cgroup), *command],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
                start_new_session=True,
            )
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not self.leader:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"systemd-nspawn did not start a container:\n{self.boot_log()}")
            self.leader = self._systemd_child()
            time.sleep(0.1)
        # until boot is over ("--wait" fails at once while the manager's bus is not up yet)
        while True:
            result = self.run("systemctl", "is-system-running", "--wait", check=False,
                              timeout=max(1.0, deadline - time.monotonic()))
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                return
            if time.monotonic() > deadline or state not in ("", "initializing", "starting"):
                raise RuntimeError(f"the container's systemd is {state!r} ({result.stderr.strip()}):\n"
                                   f"{self.boot_log()}")
            time.sleep(0.2)

    def _systemd_child(self) -> int:
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            for pid in children.read_text().split():
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
        except FileNotFoundError:
            pass
        return 0

    def run(self, *args: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["nsenter", f"--target={self.leader}", "--all", "--", *args],
                                capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    def boot_log(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        """Power off from inside (SIGTERM to nspawn is not enough); kill what is left."""
        try:
            if self.process is not None and self.process.poll() is None and self.leader:
                subprocess.run(["nsenter", f"--target={self.leader}", "--all", "--",
                                "systemctl", "poweroff"], capture_output=True, timeout=STOP_TIMEOUT)
                try:
                    self.process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            remove_cgroup_tree(self.cgroup)
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT)
