"""`python -m bench.encryption`: what payload encryption adds to a turn, on against off.

Requirement (issue 7): the per-turn overhead with encryption on vs off, in one run, at most
1.1x. Two complete stacks share one dev server: each is a worker process and a gateway process
with the same settings on its own task queue, except that `on` has CHAT_ENCRYPTION_KEYS (so
every payload the two hand to Temporal is sealed with AES-256-GCM, common/encryption.py) and
`off` has none. Both are driven over HTTP through their gateways with the scripted provider
(`scripted/echo`, whose reply is the message again), with messages of ~200 and ~2,000 chars.

Measured, sides always in alternating order (off, on, on, off, ...) so drift hits both:

  latency     sequential turns, one at a time, round-robin over a few sessions per side and
              size after a warm-up; p50/p99 per side and size, and the CPU each process used
              per turn (worker, gateway, dev server; the idle stack's are listed as a check).
  throughput  many sessions at once, each one's turns in sequence: turns/s, CPU per turn and
              the dev server's frontend RPCs per turn (the same on both sides, as a check).
  history     the events one turn adds to a session's history (after two warm-up turns):
              bytes, payloads and how many are sealed; the difference is the ciphertext's
              nonce, tag and metadata (key id, workflow id) per payload.

At the end, the dev server's SQLite file is searched for both sides' message markers: the
`off` marker must be there (the search works) and the `on` marker must not.

It is a report, not a test: it prints PASS/FAIL (p50 ratio on/off <= 1.1 per message size) and
exits 0 unless something crashed.
"""

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from bench import turns
from bench.args import override
from bench.procs import OTHER, free_port, spawn
from bench.rpcs import RpcMeter
from bench.sides import OursSide
from bench.stats import ratio, summary_ms
from bench.transport import KeepAliveTransport
from bench.turns import (
    BENCH_USER,
    FIRST_TURN_TIMEOUT,
    RESULTS,
    ROOT,
    TURN_TIMEOUT,
    Target,
    add_cpu,
    cpu_per_turn_ms,
    mark_run,
    split,
)
from common.encryption import ENCODING, new_key
from common.ids import workflow_id
from devstack.server import start_dev_env

SIDES = ("off", "on")
SIZES = {"short": 200, "long": 2000}  # message chars; the echo reply is as long again
TARGET = 1.1
PARTS = ("latency", "throughput", "history")
SHARED = 0.1  # other processes' CPU, as a share of the stack's, above which a phase is suspect
MARKER = "enc-bench-{side}-"  # starts every message, so the SQLite search knows whose it is
FILLER = (
    "Could you look over the notes from Tuesday's planning meeting and tell me which of the "
    "open questions still block the release, who owns each of them, and what a realistic date "
    "would be if the database migration slips by another week? Keep it short, please. "
)


@dataclass
class Options:
    turns: int = 240  # sequential turns per side and size
    blocks: int = 6
    latency_sessions: int = 6
    warmup_per_session: int = 2
    sessions: int = 100
    session_turns: int = 5
    rounds: int = 2  # throughput rounds per side and size
    history_turns: int = 5
    sizes: list[str] = field(default_factory=lambda: list(SIZES))
    parts: list[str] = field(default_factory=lambda: list(PARTS))


def message_text(side: str, n: int, chars: int) -> str:
    """`chars` long whatever the side and the turn, so both sides store the same amount."""
    head = f"{MARKER.format(side=side)}{n:07d}: "
    return (head + FILLER * (chars // len(FILLER) + 1))[:chars]


class Counter:
    def __init__(self, side: str, chars: int) -> None:
        self.side = side
        self.chars = chars
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return message_text(self.side, self.n, self.chars)


class EncSide(OursSide):
    def __init__(self, name: str, http: httpx.AsyncClient) -> None:
        super().__init__(http, BENCH_USER)
        self.name = name


# ---- running the stack ------------------------------------------------------------------------


class EncStack(turns.Stack):
    """Dev server and two stacks (worker + gateway), `off` and `on`.

    Borrows bench.turns.Stack's watchdog, CPU meter, quiescing and teardown.
    """

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, turns.Options())  # its options only concern its own processes
        self.queues = {side: f"bench-enc-{side}-{uuid.uuid4().hex[:8]}" for side in SIDES}
        self.clients: dict[str, httpx.AsyncClient] = {}

    @property
    def db(self) -> Path:
        return self.tmp / "temporal.db"

    async def start(self) -> None:
        metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.env = await start_dev_env(
            extra_args=["--metrics-port", str(metrics_port)],
            dev_server_database_filename=str(self.db),
            dev_server_log_level="error",  # its "slow gRPC call" warnings would bury the report
        )
        address = self.client.service_client.config.target_host
        # cwd is the temp dir and CHAT_* is dropped, so local settings cannot change the run.
        base = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
        ports = {side: free_port() for side in SIDES}
        for side in SIDES:
            env = {
                **base,
                "CHAT_TEMPORAL_ADDRESS": address,
                "CHAT_TASK_QUEUE": self.queues[side],
                "CHAT_SCRIPTED_PROVIDER_ENABLED": "true",
                "CHAT_DEFAULT_MODEL": "scripted/echo",
                "CHAT_API_KEYS": json.dumps({self.api_key: BENCH_USER}),
                "CHAT_GATEWAY_HOST": "127.0.0.1",
                "CHAT_GATEWAY_PORT": str(ports[side]),
            }
            if side == "on":
                env["CHAT_ENCRYPTION_KEYS"] = json.dumps({"bench": new_key()})
            self.children.append(spawn(f"worker {side}", ["-m", "worker"], env, self.tmp, self.tmp))
            self.children.append(spawn(f"gateway {side}", ["-m", "api"], env, self.tmp, self.tmp))
        for side in SIDES:
            self.clients[side] = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{ports[side]}",
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=TURN_TIMEOUT,
                transport=KeepAliveTransport("127.0.0.1", ports[side]),
            )
        for side in SIDES:
            self.http = self.clients[side]  # the parent's health check uses `self.http`
            await self._wait_for_gateway()
        self.http = None

    async def close(self) -> None:
        for http in self.clients.values():
            await http.aclose()
        await super().close()


# ---- measurements -----------------------------------------------------------------------------


async def timed_turn(side: EncSide, session: str, text: str, limit: float = TURN_TIMEOUT) -> float:
    start = time.perf_counter()
    async with asyncio.timeout(limit):
        await side.turn(session, text)
    return time.perf_counter() - start


def by_role(cpu: dict[str, float], side: str) -> dict[str, float]:
    """A side's CPU seconds by role: its own worker and gateway, the shared dev server, ..."""
    other = next(s for s in SIDES if s != side)
    return {
        "worker": cpu.get(f"worker {side}", 0.0),
        "gateway": cpu.get(f"gateway {side}", 0.0),
        "dev server": sum(v for k, v in cpu.items() if k.startswith("dev server")),
        "bench client": cpu.get("bench client", 0.0),
        "idle stack": cpu.get(f"worker {other}", 0.0) + cpu.get(f"gateway {other}", 0.0),
        OTHER: cpu.get(OTHER, 0.0),
    }


def stack_cpu(cpu_ms: dict[str, float]) -> float:
    """What a turn cost the service: worker + gateway + dev server."""
    return sum(cpu_ms.get(k, 0.0) for k in ("worker", "gateway", "dev server"))


async def measure_latency(
    stack: EncStack, sides: Sequence[EncSide], opts: Options
) -> dict[str, Any]:
    """Sequential turns; per block, each side runs every size, sides in alternating order."""
    counters = {(s.name, z): Counter(s.name, SIZES[z]) for s in sides for z in opts.sizes}
    sessions: dict[tuple[str, str], list[str]] = {}
    for side in sides:
        for size in opts.sizes:
            sessions[side.name, size] = [
                await side.open(f"lat-{size}-{i}") for i in range(opts.latency_sessions)
            ]
    for side in sides:  # warm-up: workers started, caches and connections warm
        for size in opts.sizes:
            for _ in range(opts.warmup_per_session):
                for session in sessions[side.name, size]:
                    text = counters[side.name, size].next()
                    await timed_turn(side, session, text, FIRST_TURN_TIMEOUT)
    await stack.quiesce()
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in sessions}
    block_p50: dict[tuple[str, str], list[float]] = {key: [] for key in sessions}
    cpu: dict[tuple[str, str], dict[str, float]] = {key: {} for key in sessions}
    meter = stack.cpu_meter()
    for block, count in enumerate(split(opts.turns, opts.blocks)):
        order = list(sides) if block % 2 == 0 else list(reversed(sides))
        for side in order:
            for size in opts.sizes:
                key = (side.name, size)
                own = sessions[key]
                meter.mark()
                block_samples: list[float] = []
                for _ in range(count):
                    session = own[len(samples[key]) % len(own)]
                    block_samples.append(await timed_turn(side, session, counters[key].next()))
                    samples[key].append(block_samples[-1])
                add_cpu(cpu[key], by_role(meter.since(), side.name))
                block_p50[key].append(summary_ms(block_samples)["p50"])
    out: dict[str, Any] = {}
    for size in opts.sizes:
        out[size] = {}
        for side in sides:
            key = (side.name, size)
            out[size][side.name] = {
                "ms": summary_ms(samples[key]),
                "cpu_ms_per_turn": cpu_per_turn_ms(cpu[key], len(samples[key])),
                "block_p50_ms": block_p50[key],
                "samples_ms": [round(s * 1000, 3) for s in samples[key]],
            }
    return out


async def throughput_round(
    stack: EncStack, side: EncSide, size: str, opts: Options, label: str
) -> dict[str, Any]:
    """All sessions at once, each one's turns in sequence; session start-up is not timed."""
    counter = Counter(side.name, SIZES[size])
    sessions = await asyncio.gather(
        *(side.open(f"{label}-{size}-{i}") for i in range(opts.sessions))
    )
    settled = await stack.quiesce()
    latencies: list[float] = []

    async def drive(session: str) -> None:
        for _ in range(opts.session_turns):
            latencies.append(await timed_turn(side, session, counter.next()))

    rpc_meter = RpcMeter(stack.metrics_url)
    await rpc_meter.start()
    meter = stack.cpu_meter()
    meter.mark()
    start = time.perf_counter()
    await asyncio.gather(*(drive(s) for s in sessions))
    elapsed = time.perf_counter() - start
    cpu = by_role(meter.since(), side.name)
    rpcs = await rpc_meter.step()
    n = opts.sessions * opts.session_turns
    return {
        "turns": n,
        "seconds": elapsed,
        "turns_per_s": n / elapsed,
        "settle_seconds": settled,
        "turn_ms": summary_ms(latencies),
        "cpu_ms_per_turn": cpu_per_turn_ms(cpu, n),
        "rpcs_per_turn": {op: count / n for op, count in sorted(rpcs.items())},
    }


async def measure_throughput(
    stack: EncStack, sides: Sequence[EncSide], opts: Options
) -> dict[str, Any]:
    """Rounds in ABBA order (off, on, on, off, ...), each side running every size per round."""
    rounds: dict[tuple[str, str], list[dict[str, Any]]] = {
        (s.name, z): [] for s in sides for z in opts.sizes
    }
    for r in range(opts.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for side in order:
            for size in opts.sizes:
                result = await throughput_round(stack, side, size, opts, f"tp{r}")
                rounds[side.name, size].append(result)
                print(
                    f"  throughput round {r + 1} {side.name:>3} {SIZES[size]:>5} chars: "
                    f"{result['turns_per_s']:.1f} turns/s"
                )
    out: dict[str, Any] = {}
    for size in opts.sizes:
        out[size] = {}
        for side in sides:
            runs = rounds[side.name, size]
            n = sum(run["turns"] for run in runs)
            cpu: dict[str, float] = {}
            rpcs: dict[str, float] = {}
            for run in runs:
                add_cpu(
                    cpu, {k: v * run["turns"] / 1000 for k, v in run["cpu_ms_per_turn"].items()}
                )
                add_cpu(rpcs, {k: v * run["turns"] for k, v in run["rpcs_per_turn"].items()})
            out[size][side.name] = {
                "turns_per_s": n / sum(run["seconds"] for run in runs),
                "turn_ms_p50": sum(run["turn_ms"]["p50"] for run in runs) / len(runs),
                "turn_ms_p99": sum(run["turn_ms"]["p99"] for run in runs) / len(runs),
                "cpu_ms_per_turn": cpu_per_turn_ms(cpu, n),
                "rpcs_per_turn": {op: count / n for op, count in sorted(rpcs.items())},
                "rounds": runs,
            }
    return out


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every `Payload` anywhere in a history event (inputs, results, headers, memo, ...)."""
    for descriptor, value in message.ListFields():
        if descriptor.type != descriptor.TYPE_MESSAGE:
            continue
        entry = descriptor.message_type
        if entry is not None and entry.GetOptions().map_entry:
            items = list(value.values())
        elif isinstance(value, Message):
            items = [value]
        else:
            items = list(value)
        for item in items:
            if isinstance(item, Payload):
                yield item
            elif isinstance(item, Message):
                yield from payloads_in(item)


_WORKFLOW_TASK = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
}


async def settled_history(client: Client, wf_id: str, run_id: str) -> list[HistoryEvent]:
    """The run's events once its last workflow task has completed, so a turn's events are all
    counted to it, however the reply and the worker's task completion race."""
    handle = client.get_workflow_handle(wf_id, run_id=run_id)
    deadline = time.monotonic() + 10
    while True:
        events = list((await handle.fetch_history()).events)
        tasks = [e.event_type for e in events if e.event_type in _WORKFLOW_TASK]
        if tasks[-1:] == [EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]:
            return events
        if time.monotonic() > deadline:
            raise RuntimeError(f"{wf_id}: a workflow task did not complete within 10 s")
        await asyncio.sleep(0.05)


async def measure_history(
    client: Client, sides: Sequence[EncSide], opts: Options
) -> dict[str, Any]:
    """Per side and size: the history one turn adds, averaged over `history_turns` turns."""
    out: dict[str, Any] = {}
    for size in opts.sizes:
        out[size] = {}
        for side in sides:
            counter = Counter(side.name, SIZES[size])
            session = await side.open(f"history-{size}")
            wf_id = workflow_id(side.user, session)
            for _ in range(2):  # warm-up turns: the run's start is not a turn's cost
                await timed_turn(side, session, counter.next(), FIRST_TURN_TIMEOUT)
            total = {"bytes": 0, "events": 0, "payloads": 0, "sealed": 0, "payload_bytes": 0}
            for _ in range(opts.history_turns):
                before = await mark_run(client, wf_id)
                if (await settled_history(client, wf_id, before.run_id))[before.events :]:
                    before = await mark_run(client, wf_id)  # it was still settling
                await timed_turn(side, session, counter.next())
                events = await settled_history(client, wf_id, before.run_id)
                new = events[before.events :]
                payloads = [p for e in new for p in payloads_in(e)]
                total["bytes"] += sum(e.ByteSize() for e in new)
                total["events"] += len(new)
                total["payloads"] += len(payloads)
                total["sealed"] += sum(p.metadata.get("encoding") == ENCODING for p in payloads)
                total["payload_bytes"] += sum(p.ByteSize() for p in payloads)
            out[size][side.name] = {
                "workflow_id": wf_id,
                "turns": opts.history_turns,
                **{f"{k}_per_turn": v / opts.history_turns for k, v in total.items()},
            }
    return out


def search_db(db: Path) -> dict[str, int]:
    """How often each side's message marker occurs in the dev server's SQLite files."""
    data = b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")) if p.is_file())
    return {side: data.count(MARKER.format(side=side).encode()) for side in SIDES}


# ---- report -----------------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    for size, sides in results.get("latency", {}).items():
        value = ratio(sides["on"]["ms"]["p50"], sides["off"]["ms"]["p50"])
        out.append(Target(f"turn latency p50, {SIZES[size]} chars", value, TARGET, False))
    return out


def _x(on: float, off: float) -> str:
    value = ratio(on, off)
    return "" if math.isnan(value) else f"{value:.2f}x"


def _row(label: str, off: float, on: float, fmt: str = ".1f") -> str:
    return f"{label:40}{off:>10{fmt}}{on:>10{fmt}}{_x(on, off):>10}"


def print_report(results: dict[str, Any], checks: list[Target]) -> None:
    head = f"{'':40}{'off':>10}{'on':>10}{'on/off':>10}"
    lat = results.get("latency", {})
    tp = results.get("throughput", {})
    if lat or tp:
        print()
        print(head)
    for size, sides in lat.items():
        off, on = sides["off"]["ms"], sides["on"]["ms"]
        print(f"sequential turn, {SIZES[size]} chars (ms)")
        for pct in ("p50", "p90", "p99", "mean"):
            print(_row(f"  {pct}", off[pct], on[pct]))
        # The spread of the blocks' own p50 ratios: how far apart identical halves could be.
        pairs = zip(sides["off"]["block_p50_ms"], sides["on"]["block_p50_ms"], strict=True)
        blocks = [ratio(b_on, b_off) for b_off, b_on in pairs]
        if blocks:
            print(f"  (p50 on/off within each block: {min(blocks):.2f}x to {max(blocks):.2f}x)")
    for size, sides in tp.items():
        off, on = sides["off"], sides["on"]
        print(f"concurrent, {SIZES[size]} chars")
        print(_row("  throughput (turns/s)", off["turns_per_s"], on["turns_per_s"]))
        print(_row("  turn p50 under load (ms)", off["turn_ms_p50"], on["turn_ms_p50"]))
        print(_row("  turn p99 under load (ms)", off["turn_ms_p99"], on["turn_ms_p99"]))
    for phase, part in (("sequential", lat), ("concurrent", tp)):
        for size, sides in part.items():
            off, on = sides["off"]["cpu_ms_per_turn"], sides["on"]["cpu_ms_per_turn"]
            print()
            title = f"CPU ms per turn, {phase}, {SIZES[size]} chars"
            print(f"{title:40}{'off':>10}{'on':>10}{'on/off':>10}")
            for role in ("worker", "gateway", "dev server"):
                print(_row(f"  {role}", off.get(role, 0.0), on.get(role, 0.0), ".2f"))
            print(_row("  stack total", stack_cpu(off), stack_cpu(on), ".2f"))
            for role in ("bench client", "idle stack", OTHER):
                label = f"  ({role})"
                print(f"{label:40}{off.get(role, 0.0):>10.2f}{on.get(role, 0.0):>10.2f}")
    for size, sides in tp.items():
        off, on = sides["off"]["rpcs_per_turn"], sides["on"]["rpcs_per_turn"]
        ops = sorted(op for op in {*off, *on} if op.startswith("frontend."))
        shown = [op for op in ops if max(off.get(op, 0.0), on.get(op, 0.0)) >= 0.05]
        if shown:
            print()
            title = f"frontend RPCs per turn, concurrent, {SIZES[size]} chars"
            print(f"{title:40}{'off':>10}{'on':>10}")
            for op in shown:
                label = f"  {op.removeprefix('frontend.')}"
                print(f"{label:40}{off.get(op, 0.0):>10.2f}{on.get(op, 0.0):>10.2f}")
    shared = [
        f"{phase} {SIZES[size]} chars {name} ({cpu[OTHER]:.1f} ms/turn)"
        for phase, part in (("sequential", lat), ("concurrent", tp))
        for size, sides in part.items()
        for name, cpu in ((n, sides[n]["cpu_ms_per_turn"]) for n in SIDES)
        if cpu.get(OTHER, 0.0) > SHARED * stack_cpu(cpu)
    ]
    if shared:
        print()
        print(
            f"WARNING: other processes used over {SHARED:.0%} of the stack's CPU in: "
            + ", ".join(shared)
            + ". The machine was shared; those figures are suspect."
        )
    hist = results.get("history", {})
    for size, sides in hist.items():
        off, on = sides["off"], sides["on"]
        print()
        title = f"history added by one turn, {SIZES[size]} chars"
        print(f"{title:40}{'off':>10}{'on':>10}{'on-off':>10}")
        for key, label in (
            ("bytes_per_turn", "bytes"),
            ("payload_bytes_per_turn", "  of which payloads"),
            ("events_per_turn", "events"),
            ("payloads_per_turn", "payloads"),
            ("sealed_per_turn", "  of which sealed"),
        ):
            diff = on[key] - off[key]
            print(f"  {label:38}{off[key]:>10,.0f}{on[key]:>10,.0f}{diff:>+10,.0f}")
        sealed = on["sealed_per_turn"]
        if sealed:
            per = (on["bytes_per_turn"] - off["bytes_per_turn"]) / sealed
            print(
                f"  {_x(on['bytes_per_turn'], off['bytes_per_turn'])} the bytes; "
                f"{per:.0f} bytes more per sealed payload"
            )
    if "sqlite" in results:
        found = results["sqlite"]
        verdict = "ok" if found["off"] > 0 and found["on"] == 0 else "NOT OK"
        print()
        print(
            f"dev server's SQLite files: off-side message marker found {found['off']:,} times, "
            f"on-side {found['on']:,} times ({verdict})"
        )
    print()
    for check in checks:
        verdict = "PASS" if check.passed else "FAIL"
        print(f"{verdict}  {check.name}: on/off {check.value:.2f}x, target {check.describe()}")


# ---- entry point ------------------------------------------------------------------------------


async def run(opts: Options, results: dict[str, Any], stamp: str) -> None:
    """Fill `results` part by part, so a crash still leaves what was measured before it."""
    results["message_chars"] = {size: SIZES[size] for size in opts.sizes}
    with tempfile.TemporaryDirectory(prefix="bench-encryption-") as tmp:
        stack = EncStack(Path(tmp))
        try:
            await stack.start()
            sides = [EncSide(side, stack.clients[side]) for side in SIDES]
            if "latency" in opts.parts:
                print(
                    f"latency: {opts.turns} sequential turns per side and size, "
                    f"{opts.latency_sessions} sessions each, {opts.blocks} alternating blocks"
                )
                results["latency"] = await stack.guarded(measure_latency(stack, sides, opts))
            if "throughput" in opts.parts:
                print(
                    f"throughput: {opts.sessions} sessions x {opts.session_turns} turns, "
                    f"{opts.rounds} round(s) per side and size"
                )
                results["throughput"] = await stack.guarded(measure_throughput(stack, sides, opts))
            if "history" in opts.parts:
                print(f"history: {opts.history_turns} turns per side and size")
                results["history"] = await stack.guarded(measure_history(stack.client, sides, opts))
        except BaseException:
            try:
                await stack.close()
            finally:
                turns.keep_logs(Path(tmp), RESULTS / f"logs-encryption-{stamp}")
            raise
        await stack.close()  # the dev server has written everything once it has stopped
        results["sqlite"] = search_db(stack.db)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.encryption",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Options()
    parser.add_argument(
        "--turns", type=int, help=f"sequential turns per side and size (default {d.turns})"
    )
    parser.add_argument("--blocks", type=int, help=f"alternating blocks (default {d.blocks})")
    parser.add_argument("--sessions", type=int, help=f"concurrent sessions (default {d.sessions})")
    parser.add_argument(
        "--session-turns",
        type=int,
        help=f"turns per concurrent session (default {d.session_turns})",
    )
    parser.add_argument(
        "--rounds", type=int, help=f"throughput rounds per side and size (default {d.rounds})"
    )
    parser.add_argument(
        "--history-turns", type=int, help=f"turns measured for history (default {d.history_turns})"
    )
    parser.add_argument(
        "--sizes", nargs="+", choices=list(SIZES), help="message sizes (default: all)"
    )
    parser.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args(argv)
    opts = Options()
    if args.quick:
        opts = Options(
            turns=40,
            blocks=2,
            latency_sessions=3,
            warmup_per_session=1,
            sessions=20,
            rounds=1,
            history_turns=3,
        )
    override(
        parser,
        args,
        opts,
        ("turns", "blocks", "sessions", "session_turns", "rounds", "history_turns"),
    )
    if args.only:
        opts.parts = [part for part in PARTS if part in args.only]
    if args.sizes:
        opts.sizes = [size for size in SIZES if size in args.sizes]
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    return turns.run_benchmark("encryption", argv, parse_args, run, targets, print_report)


if __name__ == "__main__":
    sys.exit(main())
