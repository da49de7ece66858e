"""Child processes of a benchmark run, their logs, and the CPU time each one used.

On a 2-core machine the dev server, two workers, the gateway and the client compete for
the same cores, so CPU seconds per turn say more about where time goes than wall time.
"""

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Child:
    """A subprocess whose output goes to a log file (a pipe nobody reads could block it)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill_hard(self) -> None:
        """kill -9: no draining, no goodbyes, like a pod or a machine that vanished."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def spawn(name: str, args: list[str], env: dict[str, str], cwd: Path, logs: Path) -> Child:
    """`python <args>` in `cwd`, output to `logs/<name>.log`."""
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *args], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )
    return Child(name, proc, log)


def spawn_binary(name: str, argv: list[str], env: dict[str, str], cwd: Path, logs: Path) -> Child:
    """A non-Python program (the Temporal dev server), output appended to `logs/<name>.log`,
    so a restarted process keeps adding to the same log."""
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    return Child(name, proc, log)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may contain spaces; the fields after its closing parenthesis do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def child_pids_named(prefix: str) -> list[int]:
    """Direct children of this process whose command name starts with `prefix`."""
    me = os.getpid()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me and name.startswith(prefix):
            found.append(int(entry.name))
    return found


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


OTHER = "other processes"


class CpuMeter:
    """CPU seconds used per process between `mark()` and `since()`.

    `other processes` is whatever else kept the machine's cores busy meanwhile: anything
    well above zero means the run shared the machine and its figures are suspect.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        times = os.times()
        now["bench client"] = times.user + times.system
        now[OTHER] = machine_busy_seconds()
        return now

    def mark(self) -> None:
        self._start = self._now()

    def since(self) -> dict[str, float]:
        now = self._now()
        used = {name: now[name] - self._start.get(name, 0.0) for name in now}
        used[OTHER] = max(0.0, used[OTHER] - sum(v for k, v in used.items() if k != OTHER))
        return used
