"""`python -m bench.turns`: our service against a bare Temporal baseline on one dev server.

The machine is small and noisy, so absolute figures wander from run to run; what counts
are the ratios within one run. Both sides run on the same dev server with the same process
layout (each worker in its own process, ours also behind its gateway process) and are
measured in alternating blocks, so drift hits both. It is a report, not a test: it prints
PASS/FAIL per target and exits 0 unless something crashed.
"""

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from bench.args import override
from bench.procs import OTHER, Child, CpuMeter, child_pids_named, free_port, spawn
from bench.rpcs import RpcMeter
from bench.sides import BareSide, DirectSide, OursSide, Side, message_text
from bench.stats import ratio, summary_ms
from bench.transport import KeepAliveTransport
from common.ids import workflow_id
from common.settings import Settings
from devstack.server import start_dev_env

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BENCH_USER = "bench"
TURN_TIMEOUT = 120.0  # a turn this slow means something is stuck, not slow
FIRST_TURN_TIMEOUT = 90.0  # includes the workers' start-up
# Before a timed phase, wait until the stack is idle (freshly started sessions have run their
# first workflow task): below this many busy cores, twice in a row, for at most QUIET_MAX.
QUIET_CORES = 0.15
QUIET_STEP = 0.25
QUIET_MAX = 30.0

T = TypeVar("T")


@dataclass
class Options:
    turns: int = 300
    latency_sessions: int = 10
    blocks: int = 5
    warmup_per_session: int = 2
    sessions: int = 200
    session_turns: int = 5
    rounds: int = 2
    history_turns: int = 500
    history_first_mark: int = 10
    max_turns_per_run: int | None = None
    bare_limits: str = "sdk"
    direct: bool = False
    http_transport: str = "lean"
    ours_env: dict[str, str] = field(default_factory=dict)
    parts: list[str] = field(default_factory=lambda: ["latency", "throughput", "history"])


@dataclass
class Target:
    name: str
    value: float
    limit: float
    higher_is_better: bool

    @property
    def passed(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def describe(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        return f"{op} {self.limit:g}x"


# ---- running the stack ---------------------------------------------------------------------


class Stack:
    """Dev server, bare worker, our worker and gateway; `close()` tears everything down."""

    def __init__(self, tmp: Path, opts: Options) -> None:
        self.tmp = tmp
        self.opts = opts
        self.env: WorkflowEnvironment | None = None
        self.children: list[Child] = []
        self.http: httpx.AsyncClient | None = None
        self.bare_queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
        self.ours_queue = f"bench-ours-{uuid.uuid4().hex[:8]}"
        self.api_key = f"bench-{uuid.uuid4().hex}"
        self.gateway_url = ""
        self.metrics_url = ""

    @property
    def client(self) -> Client:
        assert self.env is not None
        return self.env.client

    async def start(self) -> None:
        metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.env = await start_dev_env(
            extra_args=["--metrics-port", str(metrics_port)],
            dev_server_database_filename=str(self.tmp / "temporal.db"),
            dev_server_log_level="error",  # its "slow gRPC call" warnings would bury the report
        )
        address = self.client.service_client.config.target_host
        port = free_port()
        self.gateway_url = f"http://127.0.0.1:{port}"
        # cwd is the temp dir so a developer's `.env` cannot change what is measured.
        base = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
        ours = {
            **base,
            "CHAT_TEMPORAL_ADDRESS": address,
            "CHAT_TASK_QUEUE": self.ours_queue,
            "CHAT_SCRIPTED_PROVIDER_ENABLED": "true",
            "CHAT_DEFAULT_MODEL": "scripted/echo",
            "CHAT_API_KEYS": json.dumps({self.api_key: BENCH_USER}),
            "CHAT_GATEWAY_HOST": "127.0.0.1",
            "CHAT_GATEWAY_PORT": str(port),
        }
        if self.opts.max_turns_per_run is not None:
            ours["CHAT_MAX_TURNS_PER_RUN"] = str(self.opts.max_turns_per_run)
        ours.update(self.opts.ours_env)
        bare_args = ["-m", "bench.bare", "--address", address, "--task-queue", self.bare_queue]
        if self.opts.bare_limits == "ours":
            defaults = Settings(_env_file=None)
            bare_args += [
                "--max-concurrent-activities",
                str(defaults.max_concurrent_activities),
                "--max-concurrent-workflow-tasks",
                str(defaults.max_concurrent_workflow_tasks),
            ]
        logs = self.tmp
        self.children.append(spawn("bare worker", bare_args, base, self.tmp, logs))
        self.children.append(spawn("our worker", ["-m", "worker"], ours, self.tmp, logs))
        self.children.append(spawn("gateway", ["-m", "api"], ours, self.tmp, logs))
        # One connection per concurrent request, as gRPC multiplexes the bare side's calls.
        # Idle connections expire after 2 s, before uvicorn's 5 s keep-alive timeout: with
        # httpx's default (also 5 s) a reused connection can be closed under a request.
        transport: httpx.AsyncBaseTransport = (
            KeepAliveTransport("127.0.0.1", port)
            if self.opts.http_transport == "lean"
            else httpx.AsyncHTTPTransport(
                limits=httpx.Limits(
                    max_connections=None, max_keepalive_connections=None, keepalive_expiry=2.0
                )
            )
        )
        self.http = httpx.AsyncClient(
            base_url=self.gateway_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=TURN_TIMEOUT,
            transport=transport,
        )
        await self._wait_for_gateway()

    async def _wait_for_gateway(self) -> None:
        assert self.http is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.check_children()
            with suppress(httpx.TransportError, TimeoutError):
                async with asyncio.timeout(1):
                    if (await self.http.get("/healthz")).status_code == 200:
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError("the gateway did not answer /healthz within 60 s")

    def check_children(self) -> None:
        for child in self.children:
            if not child.alive():
                raise RuntimeError(
                    f"{child.name} exited with {child.proc.returncode}; its log ends:\n"
                    f"{child.tail()}"
                )

    def cpu_meter(self) -> CpuMeter:
        pids = {child.name: child.proc.pid for child in self.children}
        for i, pid in enumerate(child_pids_named("temporal")):
            pids["dev server" if i == 0 else f"dev server {i}"] = pid
        return CpuMeter(pids)

    async def quiesce(self) -> float:
        """Wait until the dev server and the workers are idle; returns the seconds waited."""
        meter = self.cpu_meter()
        start = time.monotonic()
        quiet = 0
        while quiet < 2 and time.monotonic() - start < QUIET_MAX:
            meter.mark()
            await asyncio.sleep(QUIET_STEP)
            used = meter.since()
            busy = sum(v for k, v in used.items() if k not in ("bench client", OTHER)) / QUIET_STEP
            quiet = quiet + 1 if busy < QUIET_CORES else 0
        return time.monotonic() - start

    async def guarded(self, work: Awaitable[T]) -> T:
        """Run `work`, failing fast (with the log tail) if a child process dies meanwhile."""

        async def watchdog() -> None:
            while True:
                self.check_children()
                await asyncio.sleep(0.5)

        main = asyncio.ensure_future(work)
        dog = asyncio.ensure_future(watchdog())
        try:
            await asyncio.wait({main, dog}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (main, dog):
                if not task.done():
                    task.cancel()
                    with suppress(asyncio.CancelledError):
                        await task
        if dog.done() and not dog.cancelled():
            dog.result()  # raises the child's failure
        return main.result()

    async def close(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        await asyncio.gather(*(asyncio.to_thread(child.stop) for child in self.children))
        if self.env is not None:
            await self.env.shutdown()


# ---- measurements --------------------------------------------------------------------------


class MessageCounter:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return message_text(self.n)


def split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def add_cpu(into: dict[str, float], more: dict[str, float]) -> None:
    for name, seconds in more.items():
        into[name] = into.get(name, 0.0) + seconds


def cpu_per_turn_ms(cpu: dict[str, float], turns: int) -> dict[str, float]:
    return {name: 1000 * seconds / turns for name, seconds in cpu.items()} if turns else {}


async def timed_turn(side: Side, session: str, text: str, limit: float = TURN_TIMEOUT) -> float:
    start = time.perf_counter()
    async with asyncio.timeout(limit):
        await side.turn(session, text)
    return time.perf_counter() - start


async def measure_latency(stack: Stack, sides: Sequence[Side], opts: Options) -> dict[str, Any]:
    """Sequential turns, one at a time, round-robin over a few sessions per side."""
    msgs = MessageCounter()
    sessions: dict[str, list[str]] = {}
    for side in sides:
        sessions[side.name] = [await side.open(f"lat{i}") for i in range(opts.latency_sessions)]
    for side in sides:  # warm-up: workers started, caches and connections warm
        for _ in range(opts.warmup_per_session):
            for session in sessions[side.name]:
                await timed_turn(side, session, msgs.next(), FIRST_TURN_TIMEOUT)
    samples: dict[str, list[float]] = {side.name: [] for side in sides}
    cpu: dict[str, dict[str, float]] = {side.name: {} for side in sides}
    rpcs: dict[str, dict[str, float]] = {side.name: {} for side in sides}
    meter = stack.cpu_meter()
    rpc_meter = RpcMeter(stack.metrics_url)
    await rpc_meter.start()
    for block, count in enumerate(split(opts.turns, opts.blocks)):
        order = list(sides) if block % 2 == 0 else list(reversed(sides))
        for side in order:
            own = sessions[side.name]
            meter.mark()
            for _ in range(count):
                session = own[len(samples[side.name]) % len(own)]
                samples[side.name].append(await timed_turn(side, session, msgs.next()))
            add_cpu(cpu[side.name], meter.since())
            add_cpu(rpcs[side.name], await rpc_meter.step())
    return {
        side.name: {
            "ms": summary_ms(samples[side.name]),
            "cpu_ms_per_turn": cpu_per_turn_ms(cpu[side.name], len(samples[side.name])),
            "rpcs_per_turn": {
                op: n / len(samples[side.name]) for op, n in sorted(rpcs[side.name].items())
            },
            "samples_ms": [round(s * 1000, 3) for s in samples[side.name]],
        }
        for side in sides
    }


async def throughput_round(stack: Stack, side: Side, opts: Options, label: str) -> dict[str, Any]:
    """All sessions at once, each one's turns in sequence; session start-up is not timed."""
    msgs = MessageCounter()
    sessions = await asyncio.gather(*(side.open(f"{label}-{i}") for i in range(opts.sessions)))
    settled = await stack.quiesce()
    latencies: list[float] = []

    async def drive(session: str) -> None:
        for _ in range(opts.session_turns):
            latencies.append(await timed_turn(side, session, msgs.next()))

    rpc_meter = RpcMeter(stack.metrics_url)
    await rpc_meter.start()
    meter = stack.cpu_meter()
    meter.mark()
    start = time.perf_counter()
    await asyncio.gather(*(drive(s) for s in sessions))
    elapsed = time.perf_counter() - start
    cpu = meter.since()
    rpcs = await rpc_meter.step()
    turns = opts.sessions * opts.session_turns
    return {
        "turns": turns,
        "seconds": elapsed,
        "turns_per_s": turns / elapsed,
        "settle_seconds": settled,
        "turn_ms": summary_ms(latencies),
        "cpu_ms_per_turn": cpu_per_turn_ms(cpu, turns),
        "rpcs_per_turn": {op: n / turns for op, n in sorted(rpcs.items())},
    }


async def measure_throughput(stack: Stack, sides: Sequence[Side], opts: Options) -> dict[str, Any]:
    """Rounds in ABBA order (bare, ours, ours, bare, ...) so neither side always goes first."""
    rounds: dict[str, list[dict[str, Any]]] = {side.name: [] for side in sides}
    for r in range(opts.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for side in order:
            result = await throughput_round(stack, side, opts, f"tp{r}")
            rounds[side.name].append(result)
            print(f"  throughput round {r + 1} {side.name}: {result['turns_per_s']:.1f} turns/s")
    out: dict[str, Any] = {}
    for side in sides:
        runs = rounds[side.name]
        turns = sum(run["turns"] for run in runs)
        seconds = sum(run["seconds"] for run in runs)
        cpu: dict[str, float] = {}
        rpcs: dict[str, float] = {}
        for run in runs:
            add_cpu(cpu, {k: v * run["turns"] / 1000 for k, v in run["cpu_ms_per_turn"].items()})
            add_cpu(rpcs, {k: v * run["turns"] for k, v in run["rpcs_per_turn"].items()})
        out[side.name] = {
            "turns_per_s": turns / seconds,
            "rounds": runs,
            "cpu_ms_per_turn": cpu_per_turn_ms(cpu, turns),
            "rpcs_per_turn": {op: n / turns for op, n in sorted(rpcs.items())},
        }
    return out


@dataclass
class RunMark:
    run_id: str
    events: int


_STARTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
_CONTINUED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
_ACCEPTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED


async def mark_run(client: Client, wf_id: str) -> RunMark:
    run_id = (await client.get_workflow_handle(wf_id).describe()).run_id
    history = await client.get_workflow_handle(wf_id, run_id=run_id).fetch_history()
    return RunMark(run_id, len(history.events))


async def written_since(client: Client, wf_id: str, before: RunMark) -> dict[str, int]:
    """Everything the workflow wrote after `before`: the rest of that run, then every run it
    continued as, whole (so work that finished between turns, like a compaction, counts)."""
    run_id: str | None = before.run_id
    skip = before.events
    total = events = runs = 0
    while run_id:
        history = await client.get_workflow_handle(wf_id, run_id=run_id).fetch_history()
        new = list(history.events[skip:])
        total += sum(e.ByteSize() for e in new)
        events += len(new)
        runs += 1
        last = history.events[-1] if history.events else None
        run_id = None
        if last is not None and last.event_type == _CONTINUED:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        skip = 0
    return {"bytes": total, "events": events, "runs": runs}


async def idle_activities(client: Client, wf_id: str) -> None:
    """Wait (about 30 s at most) until the workflow has no activity pending, such as a
    compaction running beside turns."""
    handle = client.get_workflow_handle(wf_id)
    for _ in range(600):
        if not (await handle.describe()).raw_description.pending_activities:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{wf_id} still has activities pending after 30 s")


async def turn_growth(client: Client, wf_id: str, before: RunMark) -> dict[str, Any]:
    """Bytes of the events one turn added to the run it ran in.

    A run that continues as new right after the turn closes with an event carrying the whole
    transcript; that hand-over is reported apart, as it is paid once per run, not per turn.
    """
    history = await client.get_workflow_handle(wf_id, run_id=before.run_id).fetch_history()
    new: list[HistoryEvent] = list(history.events[before.events :])
    current = (await client.get_workflow_handle(wf_id).describe()).run_id
    if current != before.run_id and not any(e.event_type == _ACCEPTED for e in new):
        # The turn was taken by the next run (the marked one was closing): measure it there.
        following = await client.get_workflow_handle(wf_id, run_id=current).fetch_history()
        new += following.events
    handover = [e for e in new if e.event_type in (_STARTED, _CONTINUED)]
    turn = [e for e in new if e.event_type not in (_STARTED, _CONTINUED)]
    by_type: Counter[str] = Counter()
    for event in turn:
        by_type[EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")] += event.ByteSize()
    return {
        "run_id": before.run_id,
        "current_run_id": current,
        "bytes": sum(e.ByteSize() for e in turn),
        "events": len(turn),
        "bytes_by_event_type": dict(by_type),
        "run_handover_bytes": sum(e.ByteSize() for e in handover),
        "continued_as_new": any(e.event_type == _CONTINUED for e in handover),
    }


async def measure_history(client: Client, ours: OursSide, opts: Options) -> dict[str, Any]:
    """One session driven to `history_turns`; history bytes added by an early and the last turn."""
    last = opts.history_turns
    marks = sorted({min(opts.history_first_mark, last), last})
    session = await ours.open("history")
    wf_id = workflow_id(ours.user, session)
    latencies: list[float] = []
    growth: dict[int, dict[str, Any]] = {}
    for n in range(1, last + 1):
        before = await mark_run(client, wf_id) if n in marks else None
        timeout = FIRST_TURN_TIMEOUT if n == 1 else TURN_TIMEOUT
        latencies.append(await timed_turn(ours, session, message_text(n), timeout))
        if before is not None:
            growth[n] = await turn_growth(client, wf_id, before)
        if n % 100 == 0:
            print(f"  history session: {n}/{last} turns")
    window = max(1, min(50, last // 5))
    return {
        "workflow_id": wf_id,
        "turns": last,
        "marks": {str(n): growth[n] for n in marks},
        "first_mark": marks[0],
        "last_mark": marks[-1],
        "ratio": ratio(growth[marks[-1]]["bytes"], growth[marks[0]]["bytes"]),
        "turn_ms_first_window": summary_ms(latencies[:window]),
        "turn_ms_last_window": summary_ms(latencies[-window:]),
        "window": window,
    }


# ---- report --------------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    if "latency" in results:
        lat = results["latency"]
        for pct, limit in (("p50", 1.25), ("p99", 2.0)):
            value = ratio(lat["ours"]["ms"][pct], lat["bare"]["ms"][pct])
            out.append(Target(f"turn latency {pct}", value, limit, higher_is_better=False))
    if "throughput" in results:
        tp = results["throughput"]
        value = ratio(tp["ours"]["turns_per_s"], tp["bare"]["turns_per_s"])
        out.append(Target("throughput", value, 0.8, higher_is_better=True))
    if "history" in results:
        h = results["history"]
        name = f"history growth (turn {h['last_mark']} / turn {h['first_mark']})"
        out.append(Target(name, h["ratio"], 1.2, higher_is_better=False))
    return out


def print_report(results: dict[str, Any], checks: list[Target]) -> None:
    names = _side_names(results)
    others = [n for n in names if n != "bare"]
    header = "".join(f"{n:>10}" for n in names) + "".join(f"{n + '/bare':>13}" for n in others)
    rows: list[tuple[str, dict[str, float]]] = []
    if "latency" in results:
        lat = results["latency"]
        for pct in ("p50", "p90", "p99", "mean", "max"):
            rows.append((f"turn latency {pct} (ms)", {n: lat[n]["ms"][pct] for n in names}))
    if "throughput" in results:
        tp = results["throughput"]
        rows.append(("throughput (turns/s)", {n: tp[n]["turns_per_s"] for n in names}))
        for pct in ("p50", "p99"):
            values = {n: _pooled(tp[n]["rounds"], pct) for n in names}
            rows.append((f"  under load, turn {pct} (ms)", values))
    print()
    if rows:
        print(f"{'':34}{header}")
        for label, values in rows:
            cells = "".join(f"{values[n]:>10.1f}" for n in names)
            cells += "".join(f"{_x(values[n], values['bare']):>13}" for n in others)
            print(f"{label:34}{cells}")
    if "history" in results:
        _print_history(results["history"])
    _print_cpu(results, names)
    _print_rpcs(results, names)
    print()
    for check in checks:
        verdict = "PASS" if check.passed else "FAIL"
        what = "" if check.name.startswith("history") else " ours/bare"
        print(f"{verdict}  {check.name}:{what} {check.value:.2f}x, target {check.describe()}")


def _side_names(results: dict[str, Any]) -> list[str]:
    for part in ("latency", "throughput"):
        if part in results:
            return list(results[part])
    return []


def _print_history(h: dict[str, Any]) -> None:
    first, last = h["marks"][str(h["first_mark"])], h["marks"][str(h["last_mark"])]
    print()
    print(f"{'history bytes added by one turn (ours)':42}{'bytes':>10}{'events':>8}")
    for n, mark in ((h["first_mark"], first), (h["last_mark"], last)):
        print(f"{'  turn ' + str(n):42}{mark['bytes']:>10,}{mark['events']:>8}")
    print(f"{'  ratio':42}{_x(last['bytes'], first['bytes']):>10}")
    for n, mark in ((h["first_mark"], first), (h["last_mark"], last)):
        if mark["run_handover_bytes"]:
            print(
                f"  (turn {n} ended its run: continue-as-new hand-over of "
                f"{mark['run_handover_bytes']:,} bytes, once per run, not counted above)"
            )
    f, la = h["turn_ms_first_window"], h["turn_ms_last_window"]
    print(
        f"  history session turn p50: first {h['window']} turns {f['p50']:.1f} ms, "
        f"last {h['window']} turns {la['p50']:.1f} ms"
    )


def _columns(results: dict[str, Any], names: list[str], key: str) -> list[tuple[str, Any]]:
    """One table column per (phase, side): `lat bare`, `lat ours`, `thr bare`, ..."""
    return [
        (f"{part[:3]} {n}", results[part][n][key])
        for part in ("latency", "throughput")
        if part in results
        for n in names
    ]


def _print_cpu(results: dict[str, Any], names: list[str]) -> None:
    columns: list[tuple[str, dict[str, float]]] = _columns(results, names, "cpu_ms_per_turn")
    if not columns:
        return
    print()
    print("CPU ms per turn, by process (lat = sequential latency, thr = throughput phase)")
    print(f"{'':34}" + "".join(f"{title:>12}" for title, _ in columns))
    processes = sorted({p for _, cpu in columns for p in cpu} - {OTHER})
    for process in [*processes, "total", OTHER]:
        cells = ""
        for _, cpu in columns:
            if process == "total":
                value = sum(v for k, v in cpu.items() if k != OTHER)
            else:
                value = cpu.get(process, 0.0)
            cells += f"{value:>12.2f}"
        label = f"({OTHER}, not the bench)" if process == OTHER else process
        print(f"{label:34}{cells}")
    if "throughput" in results and "bare" in names:
        # With every core busy, turns/s is at most cores / CPU per turn, so this ratio is the
        # ceiling of the throughput ratio, and much steadier from run to run than turns/s.
        tp = results["throughput"]
        bare = sum(v for k, v in tp["bare"]["cpu_ms_per_turn"].items() if k != OTHER)
        for n in names:
            if n != "bare":
                mine = sum(v for k, v in tp[n]["cpu_ms_per_turn"].items() if k != OTHER)
                print(
                    f"  throughput phase: {n} uses {_x(mine, bare)} the CPU per turn of bare, "
                    f"so CPU-bound {n}/bare throughput is at most {_x(bare, mine)}"
                )


def _print_rpcs(results: dict[str, Any], names: list[str]) -> None:
    columns: list[tuple[str, dict[str, float]]] = _columns(results, names, "rpcs_per_turn")
    # Frontend calls are the clients' and workers' round trips; internal hops follow them.
    ops = sorted({op for _, rpcs in columns for op in rpcs if op.startswith("frontend.")})
    shown = [op for op in ops if max(rpcs.get(op, 0.0) for _, rpcs in columns) >= 0.05]
    if not shown:
        return
    print()
    print("Frontend RPCs per turn")
    print(f"{'':34}" + "".join(f"{title:>12}" for title, _ in columns))
    for op in shown:
        cells = "".join(f"{rpcs.get(op, 0.0):>12.2f}" for _, rpcs in columns)
        print(f"{op.removeprefix('frontend.'):34}{cells}")


def _pooled(rounds: list[dict[str, Any]], pct: str) -> float:
    values = [float(r["turn_ms"][pct]) for r in rounds]
    return sum(values) / len(values)


def _x(ours: float, bare: float) -> str:
    value = ratio(ours, bare)
    return "" if math.isnan(value) else f"{value:.2f}x"


# ---- entry point ---------------------------------------------------------------------------


async def run(opts: Options, results: dict[str, Any], stamp: str) -> None:
    """Fill `results` part by part, so a crash still leaves what was measured before it."""
    with tempfile.TemporaryDirectory(prefix="bench-turns-") as tmp:
        stack = Stack(Path(tmp), opts)
        try:
            await stack.start()
            assert stack.http is not None
            bare = BareSide(stack.client, stack.bare_queue)
            ours = OursSide(stack.http, BENCH_USER)
            sides: list[Side] = [bare, ours]
            if opts.direct:
                sides.append(
                    DirectSide(stack.client, stack.ours_queue, BENCH_USER, opts.max_turns_per_run)
                )
            if "latency" in opts.parts:
                print(f"latency: {opts.turns} turns per side over {opts.latency_sessions} sessions")
                results["latency"] = await stack.guarded(measure_latency(stack, sides, opts))
            if "throughput" in opts.parts:
                print(
                    f"throughput: {opts.sessions} sessions x {opts.session_turns} turns, "
                    f"{opts.rounds} round(s) per side"
                )
                results["throughput"] = await stack.guarded(measure_throughput(stack, sides, opts))
            if "history" in opts.parts:
                print(f"history: one session to {opts.history_turns} turns")
                results["history"] = await stack.guarded(measure_history(stack.client, ours, opts))
        except BaseException:
            try:
                await stack.close()
            finally:
                keep_logs(Path(tmp), RESULTS / f"logs-{stamp}")
            raise
        await stack.close()


def keep_logs(source: Path, kept: Path) -> None:
    """Copy the child processes' logs out of the temp dir before it is removed."""
    kept.mkdir(parents=True, exist_ok=True)
    for log in source.glob("*.log"):
        shutil.copy(log, kept / log.name)
    print(f"failed; process logs kept in {kept.relative_to(ROOT)}", file=sys.stderr)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.turns", description=__doc__)
    parser.add_argument("--turns", type=int, help="sequential turns per side (default 300)")
    parser.add_argument("--sessions", type=int, help="concurrent sessions (default 200)")
    parser.add_argument("--session-turns", type=int, help="turns per session (default 5)")
    parser.add_argument("--rounds", type=int, help="throughput rounds per side (default 2)")
    parser.add_argument("--history-turns", type=int, help="history session length (default 500)")
    parser.add_argument("--blocks", type=int, help="alternating latency blocks (default 5)")
    parser.add_argument(
        "--max-turns-per-run",
        type=int,
        help="CHAT_MAX_TURNS_PER_RUN for our side (default: the project's default)",
    )
    parser.add_argument(
        "--bare-limits",
        choices=["sdk", "ours"],
        default="sdk",
        help="bare worker slots: the SDK's defaults, or our worker's settings (default sdk)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["latency", "throughput", "history"],
        help="run only these parts",
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="also measure ours without the gateway (its SessionService called in-process)",
    )
    parser.add_argument(
        "--http-transport",
        choices=["lean", "httpcore"],
        default="lean",
        help="transport of the shared httpx client: bench/transport.py (default), or httpx's "
        "own, which costs the 2 shared cores ~6 ms CPU per request at 200 in flight",
    )
    parser.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="CHAT_NAME=VALUE",
        help="an extra setting for our worker and gateway, to try a tuning (repeatable)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args(argv)
    opts = Options()
    if args.quick:
        opts = Options(
            turns=40, blocks=2, warmup_per_session=1, sessions=20, rounds=2, history_turns=30
        )
    override(
        parser,
        args,
        opts,
        ("turns", "sessions", "session_turns", "rounds", "history_turns", "blocks"),
    )
    opts.max_turns_per_run = args.max_turns_per_run
    opts.bare_limits = args.bare_limits
    opts.direct = args.direct
    opts.http_transport = args.http_transport
    for item in args.ours_env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("CHAT_"):
            parser.error(f"--ours-env wants CHAT_NAME=VALUE, got {item!r}")
        opts.ours_env[name] = value
    if args.only:
        opts.parts = list(args.only)
    return opts


def code_version() -> str:
    """The commit measured, marked dirty if files outside bench/ differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":!bench"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{commit or 'unknown'}{'+dirty' if status else ''}"


def run_benchmark(
    name: str,
    argv: Sequence[str] | None,
    parse: Callable[[Sequence[str] | None], Any],
    run_all: Callable[[Any, dict[str, Any], str], Coroutine[Any, Any, None]],
    check: Callable[[dict[str, Any]], list[Target]],
    report: Callable[[dict[str, Any], list[Target]], None],
) -> int:
    """Parse, run, report even after a crash, and write the results as JSON: every
    benchmark's entry point (`python -m bench.<name>`)."""
    opts = parse(argv)
    started = time.perf_counter()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    version = code_version()
    load = os.getloadavg()
    print(f"measuring commit {version}; load average before the run {load[0]:.2f}")
    results: dict[str, Any] = {}
    error: BaseException | None = None
    try:
        asyncio.run(run_all(opts, results, stamp))
    except BaseException as err:
        error = err
    checks = check(results)
    report(results, checks)
    elapsed = time.perf_counter() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}-{stamp}.json"
    document = {
        "started_at": stamp,
        "commit": version,
        "load_average_before": load,
        "load_average_after": os.getloadavg(),
        "wall_seconds": elapsed,
        "command": " ".join([f"python -m bench.{name}", *(argv or sys.argv[1:])]),
        "options": asdict(opts),
        "cpus": os.cpu_count(),
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "results": results,
        "targets": [{**asdict(c), "passed": c.passed} for c in checks],
    }
    out.write_text(json.dumps(document, indent=2, default=str))
    print(f"\n{elapsed:.0f} s in all; results in {out.relative_to(ROOT)}")
    if error is not None:
        raise error  # after the partial report: a crash still exits non-zero
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark("turns", argv, parse_args, run, targets, print_report)


if __name__ == "__main__":
    sys.exit(main())
