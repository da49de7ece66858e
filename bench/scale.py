"""`python -m bench.scale`: throughput and turn latency with 1, 2 and 3 worker processes.

One dev server (a SQLite file, the project's fast settings), one gateway process, and 1, 2
or 3 worker processes on one task queue, in one run. Every worker count gets the same load:
a saturating one (all sessions at once, each one's turns in sequence) for throughput and
latency under load, and sequential turns for latency alone; the model is the instant
scripted one, so what is measured is the service, not a model. Worker counts are measured in
the order 1, 2, 3, 3, 2, 1 (two rounds each), so drift on this shared machine hits all of
them alike, and each count gets fresh workers and fresh sessions. It prints the figures, the
ratio against 1 worker, and the CPU each process used per turn and how many cores the whole
machine was busy, which is where the bottleneck shows.
"""

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.args import override
from bench.chaos import USER, Cluster
from bench.procs import OTHER, CpuMeter
from bench.sides import OursSide, message_text
from bench.stats import summary_ms
from bench.transport import KeepAliveTransport
from bench.turns import Target, run_benchmark

TURN_TIMEOUT = 120.0  # a turn this slow means something is stuck, not slow
QUIET_CORES = 0.15  # before a timed part: the stack below this many busy cores twice running
QUIET_STEP = 0.25
QUIET_MAX = 30.0
CLIENT = "bench client"


@dataclass
class Options:
    workers: list[int] = field(default_factory=lambda: [1, 2, 3, 3, 2, 1])
    sessions: int = 200
    session_turns: int = 5
    sequential_turns: int = 100
    latency_sessions: int = 10


class Meter:
    """CPU per process of the cluster as it is now (workers come and go between rounds)."""

    def __init__(self, cluster: Cluster) -> None:
        self._meter = CpuMeter(cluster.pids())

    def mark(self) -> None:
        self._meter.mark()

    def since(self) -> dict[str, float]:
        """CPU seconds by role: dev server, workers, gateway, bench client, other processes."""
        grouped: dict[str, float] = {}
        for name, seconds in self._meter.since().items():
            role = "workers" if name.startswith("worker") else name
            role = "gateway" if role.startswith("gateway") else role
            grouped[role] = grouped.get(role, 0.0) + seconds
        return grouped


async def quiesce(cluster: Cluster) -> None:
    """Wait until the dev server, the workers and the gateway are idle (started sessions have
    run their first workflow task), for at most QUIET_MAX."""
    meter = Meter(cluster)
    start = time.monotonic()
    quiet = 0
    while quiet < 2 and time.monotonic() - start < QUIET_MAX:
        meter.mark()
        await asyncio.sleep(QUIET_STEP)
        used = meter.since()
        busy = sum(v for k, v in used.items() if k not in (CLIENT, OTHER)) / QUIET_STEP
        quiet = quiet + 1 if busy < QUIET_CORES else 0


async def timed_turn(side: OursSide, session: str, text: str) -> float:
    start = time.perf_counter()
    async with asyncio.timeout(TURN_TIMEOUT):
        await side.turn(session, text)
    return time.perf_counter() - start


async def measure(
    cluster: Cluster, side: OursSide, workers: int, label: str, opts: Options
) -> dict[str, Any]:
    """One round with `workers` fresh worker processes: sequential turns, then all at once."""
    await cluster.set_workers(workers)
    counter = iter(range(1, 1 << 30))
    # Sequential: one turn at a time over a few sessions.
    few = [await side.open(f"{label}-lat{i}") for i in range(opts.latency_sessions)]
    for session in few:  # warm-up, not timed: the workers are up, caches warm
        await timed_turn(side, session, message_text(next(counter)))
    await quiesce(cluster)
    sequential = [
        await timed_turn(side, few[n % len(few)], message_text(next(counter)))
        for n in range(opts.sequential_turns)
    ]
    # Saturating: every session at once, each one's turns in sequence.
    sessions = await asyncio.gather(*(side.open(f"{label}-{i}") for i in range(opts.sessions)))
    await asyncio.gather(*(timed_turn(side, s, message_text(next(counter))) for s in sessions))
    await quiesce(cluster)
    latencies: list[float] = []

    async def drive(session: str) -> None:
        for _ in range(opts.session_turns):
            latencies.append(await timed_turn(side, session, message_text(next(counter))))

    meter = Meter(cluster)
    meter.mark()
    start = time.perf_counter()
    await asyncio.gather(*(drive(s) for s in sessions))
    elapsed = time.perf_counter() - start
    cpu = meter.since()
    turns = opts.sessions * opts.session_turns
    print(f"  {workers} worker(s): {turns / elapsed:.1f} turns/s")
    return {
        "workers": workers,
        "turns": turns,
        "seconds": elapsed,
        "turns_per_s": turns / elapsed,
        "turn_ms": summary_ms(latencies),
        "sequential_ms": summary_ms(sequential),
        "cpu_seconds": cpu,
    }


def combine(rounds: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per worker count: throughput over all its rounds, latency percentiles averaged."""
    out: dict[int, dict[str, Any]] = {}
    for count in sorted({r["workers"] for r in rounds}):
        mine = [r for r in rounds if r["workers"] == count]
        turns = sum(r["turns"] for r in mine)
        seconds = sum(r["seconds"] for r in mine)
        cpu: dict[str, float] = {}
        for r in mine:
            for name, value in r["cpu_seconds"].items():
                cpu[name] = cpu.get(name, 0.0) + value
        out[count] = {
            "turns_per_s": turns / seconds,
            "rounds_turns_per_s": [r["turns_per_s"] for r in mine],
            "p50": _mean(r["turn_ms"]["p50"] for r in mine),
            "p99": _mean(r["turn_ms"]["p99"] for r in mine),
            "seq_p50": _mean(r["sequential_ms"]["p50"] for r in mine),
            "seq_p99": _mean(r["sequential_ms"]["p99"] for r in mine),
            "cpu_ms_per_turn": {k: 1000 * v / turns for k, v in cpu.items()},
            "busy_cores": sum(cpu.values()) / seconds,
        }
    return out


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items)


async def run(opts: Options, results: dict[str, Any], stamp: str) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        cluster = Cluster(Path(tmp), workers=0, gateways=1)
        transport: httpx.AsyncBaseTransport | None = None
        try:
            await cluster.start()
            port = cluster.gateway_ports[0]
            transport = KeepAliveTransport("127.0.0.1", port)
            async with httpx.AsyncClient(
                base_url=cluster.urls[0],
                headers={"Authorization": f"Bearer {cluster.api_key}"},
                transport=transport,
            ) as http:
                side = OursSide(http, USER)
                print(
                    f"{opts.sessions} sessions x {opts.session_turns} turns at once, and "
                    f"{opts.sequential_turns} sequential turns, per round; worker counts "
                    f"{opts.workers}"
                )
                rounds: list[dict[str, Any]] = []
                results["rounds"] = rounds
                for n, workers in enumerate(opts.workers):
                    rounds.append(await measure(cluster, side, workers, f"r{n}", opts))
                results["by_workers"] = combine(rounds)
        finally:
            await cluster.close()
            cluster.kill_all()


def targets(results: dict[str, Any]) -> list[Target]:
    return []  # a report of how it scales, with no target to pass


def print_report(results: dict[str, Any], _: list[Target]) -> None:
    by = results.get("by_workers")
    if not by:
        print("no complete result")
        return
    counts = sorted(by)
    base = by[counts[0]]
    print()
    print(f"{'workers':38}" + "".join(f"{c:>10}" for c in counts))

    def row(label: str, key: str, fmt: str = "{:.1f}", vs_base: bool = True) -> None:
        cells = "".join(f"{fmt.format(by[c][key]):>10}" for c in counts)
        print(f"{label:38}{cells}")
        if vs_base:
            ratios = "".join(f"{by[c][key] / base[key]:>9.2f}x" for c in counts)
            print(f"{'  vs ' + str(counts[0]) + ' worker':38}{ratios}")

    row("throughput (turns/s)", "turns_per_s")
    rounds = "".join(
        f"{'/'.join(f'{v:.0f}' for v in by[c]['rounds_turns_per_s']):>10}" for c in counts
    )
    print(f"{'  each round':38}{rounds}")
    row("under load, turn p50 (ms)", "p50")
    row("under load, turn p99 (ms)", "p99")
    row("sequential, turn p50 (ms)", "seq_p50", vs_base=False)
    row("sequential, turn p99 (ms)", "seq_p99", vs_base=False)
    print()
    print("CPU per turn under load (ms), by process")
    names = sorted({k for c in counts for k in by[c]["cpu_ms_per_turn"]}, key=_role_order)
    for name in names:
        cells = "".join(f"{by[c]['cpu_ms_per_turn'].get(name, 0.0):>10.2f}" for c in counts)
        print(f"  {name:36}{cells}")
    total = "".join(f"{sum(by[c]['cpu_ms_per_turn'].values()):>10.2f}" for c in counts)
    print(f"  {'all':36}{total}")
    row("busy cores during the load", "busy_cores", "{:.2f}", vs_base=False)


def _role_order(name: str) -> tuple[int, str]:
    order = ["dev server", "workers", "gateway", CLIENT, OTHER]
    return (order.index(name) if name in order else len(order), name)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--sessions", type=int, help="concurrent sessions (default 200)")
    parser.add_argument("--session-turns", type=int, help="turns per session (default 5)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        help="worker counts, one round each, in this order (default 1 2 3 3 2 1)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args(argv)
    opts = Options()
    if args.quick:
        opts = Options(
            workers=[1, 2, 3], sessions=50, session_turns=4, sequential_turns=30, latency_sessions=5
        )
    if args.workers:
        if min(args.workers) < 1:
            parser.error("--workers must be at least 1")
        opts.workers = args.workers
    override(parser, args, opts, ("sessions", "session_turns"))
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark("scale", argv, parse_args, run, targets, print_report)


if __name__ == "__main__":
    sys.exit(main())
