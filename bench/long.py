"""`python -m bench.long` (`make bench-long`): a 1,000-turn session against a fresh one.

Issue 5's targets, each measured against a baseline taken in the same run, because this
machine is noisy:
- per-turn latency of a session past turn 1,000 vs one at turn ~10, turns interleaved
  (target: p50 and p99 within 1.2x);
- history bytes a turn writes at turn 1,000+ vs the turn's new message bytes (target:
  at most 2 KB more), over 30 turns: the mean (everything the workflow wrote over them,
  running summaries and run hand-overs included, divided by the turns), on which the target
  is judged, and the typical turn (median);
- the first turn of an evicted 1,000-turn session vs an evicted fresh one: the worker runs
  with a 2-workflow cache and turns go round four sessions, so every turn replays its run
  (target: p99 at most 100 ms above);
- worker memory (RSS) with 1,000 idle sessions open vs the same worker before them.
Messages are 2 KB, the model is the scripted one; the stack is one dev server (SQLite file),
one worker and one gateway, each its own process. It prints PASS/FAIL and exits 0 unless
something crashed.
"""

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import turns
from bench.args import override
from bench.procs import Child, free_port, spawn
from bench.stats import percentile, ratio, summary_ms
from bench.transport import KeepAliveTransport
from common.ids import workflow_id
from common.settings import STORED_RUN_TURNS
from devstack.server import start_dev_env

MESSAGE_CHARS = 2_000
EVICTION_CACHE = 2  # workflows the worker caches in the eviction phase


@dataclass
class Options:
    long_turns: int = 1_200
    compare_turns: int = 60
    history_turns: int = 30
    eviction_rounds: int = 30
    idle_sessions: int = 1_000
    concurrency: int = 16
    turns_per_run: int | None = None  # None: the worker's default (STORED_RUN_TURNS)


def text(label: str, n: int) -> str:
    head = f"{label} {n:05d} "
    return head + ("lorem ipsum dolor " * 200)[: MESSAGE_CHARS - len(head)]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class LongStack(turns.Stack):
    """Dev server, one worker and one gateway; the worker can be restarted with new settings."""

    def __init__(self, tmp: Path, turns_per_run: int | None = None) -> None:
        super().__init__(tmp, turns.Options())
        self.worker_env: dict[str, str] = {}
        self.turns_per_run = turns_per_run

    async def start(self) -> None:
        self.env = await start_dev_env(
            dev_server_database_filename=str(self.tmp / "temporal.db"),
            dev_server_log_level="error",
        )
        port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        base["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(turns.ROOT), base.get("PYTHONPATH")])
        )
        self.worker_env = {
            **base,
            "CHAT_TEMPORAL_ADDRESS": self.client.service_client.config.target_host,
            "CHAT_TASK_QUEUE": self.ours_queue,
            "CHAT_SCRIPTED_PROVIDER_ENABLED": "true",
            "CHAT_DEFAULT_MODEL": "scripted/echo",
            "CHAT_API_KEYS": json.dumps({self.api_key: turns.BENCH_USER}),
            "CHAT_GATEWAY_HOST": "127.0.0.1",
            "CHAT_GATEWAY_PORT": str(port),
            "CHAT_REPLY_WAIT_SECONDS": "120",
            # As `make run` and docker-compose run it: hand-overs by reference, short runs.
            "CHAT_PAYLOAD_STORE_DIR": str(self.tmp / "payloads"),
        }
        if self.turns_per_run is not None:
            self.worker_env["CHAT_MAX_TURNS_PER_RUN"] = str(self.turns_per_run)
        self.children.append(self._spawn_worker({}))
        self.children.append(spawn("gateway", ["-m", "api"], self.worker_env, self.tmp, self.tmp))
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=turns.TURN_TIMEOUT,
            transport=KeepAliveTransport("127.0.0.1", port),
        )
        await self._wait_for_gateway()

    def _spawn_worker(self, extra: dict[str, str]) -> Child:
        return spawn("worker", ["-m", "worker"], {**self.worker_env, **extra}, self.tmp, self.tmp)

    @property
    def worker(self) -> Child:
        return next(c for c in self.children if c.name == "worker")

    async def restart_worker(self, **settings: str) -> None:
        old = self.worker
        await asyncio.to_thread(old.stop)
        self.children.remove(old)
        self.children.append(self._spawn_worker(settings))

    async def open(self, label: str) -> str:
        assert self.http is not None
        session_id = f"{label}-{uuid.uuid4().hex[:8]}"
        response = await self.http.post("/v1/sessions", json={"session_id": session_id})
        response.raise_for_status()
        return session_id

    async def turn(self, session_id: str, content: str) -> float:
        assert self.http is not None
        start = time.perf_counter()
        response = await self.http.post(
            f"/v1/sessions/{session_id}/messages", json={"content": content}
        )
        elapsed = time.perf_counter() - start
        if response.status_code != 200 or response.json()["reply"].get("error"):
            raise RuntimeError(f"turn on {session_id}: {response.status_code} {response.text}")
        return elapsed


async def drive(stack: LongStack, session_id: str, label: str, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        await stack.turn(session_id, text(label, n))


async def history(stack: LongStack, long_id: str, opts: Options) -> dict[str, Any]:
    """History bytes of `history_turns` turns on the long session.

    The mean is everything the workflow wrote over those turns (measured from before the
    first to after the last, once its compaction has finished) divided by the turns, so the
    running summaries and run hand-overs are spread over them. Per turn, the typical one
    (median) and one without compaction by event type."""
    wf_id = workflow_id(turns.BENCH_USER, long_id)
    await turns.idle_activities(stack.client, wf_id)
    start = await turns.mark_run(stack.client, wf_id)
    growth: list[dict[str, Any]] = []
    for n in range(opts.history_turns):
        mark = await turns.mark_run(stack.client, wf_id)
        await stack.turn(long_id, text("long", opts.long_turns + n))
        growth.append(await turns.turn_growth(stack.client, wf_id, mark))
    await turns.idle_activities(stack.client, wf_id)
    written = await turns.written_since(stack.client, wf_id, start)
    message_bytes = 2 * MESSAGE_CHARS + len("echo: ")
    per_turn = [g["bytes"] + g["run_handover_bytes"] for g in growth]
    mean = round(written["bytes"] / opts.history_turns)
    plain = min(growth, key=lambda g: g["bytes"] + g["run_handover_bytes"])
    handovers = [g["run_handover_bytes"] for g in growth if g["continued_as_new"]]
    return {
        "turns_measured": opts.history_turns,
        "runs_touched": written["runs"],
        "bytes_per_turn": mean,
        "bytes_typical_turn": round(percentile(per_turn, 50)),
        "bytes_largest_turn": max(per_turn),
        "bytes_by_type": plain["bytes_by_event_type"],
        "handover_bytes": round(sum(handovers) / len(handovers)) if handovers else None,
        "message_bytes_per_turn": message_bytes,
        "overhead_bytes": mean - message_bytes,
    }


async def compare(stack: LongStack, long_id: str, fresh_id: str, opts: Options) -> dict[str, Any]:
    """Interleaved turns on the long and the fresh session."""
    times: dict[str, list[float]] = {"fresh": [], "long": []}
    first = opts.long_turns + opts.history_turns
    for n in range(opts.compare_turns):
        times["fresh"].append(await stack.turn(fresh_id, text("fresh", 10 + n)))
        times["long"].append(await stack.turn(long_id, text("long", first + n)))
    status = (await stack.http.get(f"/v1/sessions/{long_id}")).json()  # type: ignore[union-attr]
    return {
        "fresh": summary_ms(times["fresh"]),
        "long": summary_ms(times["long"]),
        "p50_ratio": ratio(percentile(times["long"], 50), percentile(times["fresh"], 50)),
        "p99_ratio": ratio(percentile(times["long"], 99), percentile(times["fresh"], 99)),
        "long_turns_at_end": status["turns"],
    }


async def eviction(stack: LongStack, long_id: str, opts: Options) -> dict[str, Any]:
    """Every turn replays its session's run: four sessions take turns on a 2-workflow cache."""
    await stack.restart_worker(CHAT_MAX_CACHED_WORKFLOWS=str(EVICTION_CACHE))
    fresh_id = await stack.open("evicted-fresh")
    others = [await stack.open(f"evictor{i}") for i in range(2)]
    # One round untimed: the first turn each session takes on a restarted worker waited
    # about 0.9 s before its workflow task was even scheduled (a restart, not an eviction).
    for session_id in (long_id, *others, fresh_id):
        await stack.turn(session_id, text("warm-up", 0))
    times: dict[str, list[float]] = {"fresh": [], "long": []}
    for n in range(opts.eviction_rounds):
        times["long"].append(await stack.turn(long_id, text("evict-long", n)))
        for other in others:
            await stack.turn(other, text("evictor", n))
        times["fresh"].append(await stack.turn(fresh_id, text("evict-fresh", n)))
    status = (await stack.http.get(f"/v1/sessions/{long_id}")).json()  # type: ignore[union-attr]
    p99 = {side: percentile(values, 99) for side, values in times.items()}
    return {
        "fresh": summary_ms(times["fresh"]),
        "long": summary_ms(times["long"]),
        "p99_above_fresh_ms": (p99["long"] - p99["fresh"]) * 1000,
        "long_turns_at_end": status["turns"],
        "long_runs_turns": status["turns"] % (opts.turns_per_run or STORED_RUN_TURNS),
    }


async def memory(stack: LongStack, opts: Options) -> dict[str, Any]:
    await stack.restart_worker()
    warm = await stack.open("warm")
    await stack.turn(warm, text("warm", 0))
    await stack.quiesce()
    before = rss_kb(stack.worker.proc.pid)
    gate = asyncio.Semaphore(opts.concurrency)

    async def one(i: int) -> None:
        async with gate:
            session_id = await stack.open(f"idle{i}")
            await stack.turn(session_id, text("idle", i))

    await asyncio.gather(*(one(i) for i in range(opts.idle_sessions)))
    await stack.quiesce()
    after = rss_kb(stack.worker.proc.pid)
    return {
        "sessions": opts.idle_sessions,
        "rss_before_mb": before / 1024,
        "rss_after_mb": after / 1024,
        "ratio": ratio(after, before),
        "kb_per_session": (after - before) / opts.idle_sessions,
    }


async def run(opts: Options) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-long-"))
    stack = LongStack(tmp, opts.turns_per_run)
    results: dict[str, Any] = {"options": opts.__dict__}
    try:
        await stack.start()
        long_id = await stack.open("long")
        fresh_id = await stack.open("fresh")
        started = time.monotonic()
        await stack.guarded(drive(stack, long_id, "long", opts.long_turns))
        await stack.guarded(drive(stack, fresh_id, "fresh", 10))
        results["drive_seconds"] = time.monotonic() - started
        await stack.quiesce()
        results["history"] = await stack.guarded(history(stack, long_id, opts))
        results["compare"] = await stack.guarded(compare(stack, long_id, fresh_id, opts))
        results["eviction"] = await stack.guarded(eviction(stack, long_id, opts))
        results["memory"] = await stack.guarded(memory(stack, opts))
    finally:
        await stack.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def report(results: dict[str, Any]) -> bool:
    c, h, e, m = results["compare"], results["history"], results["eviction"], results["memory"]
    print(f"drove {results['options']['long_turns']} turns in {results['drive_seconds']:.0f} s")
    print(
        f"turn latency, long session at turn {c['long_turns_at_end']} vs fresh (interleaved): "
        f"p50 {c['long']['p50']:.1f} vs {c['fresh']['p50']:.1f} ms ({c['p50_ratio']:.2f}x), "
        f"p99 {c['long']['p99']:.1f} vs {c['fresh']['p99']:.1f} ms ({c['p99_ratio']:.2f}x)"
    )
    print(
        f"history per turn at turn 1,000+ ({h['turns_measured']} turns, {h['runs_touched']} "
        f"runs): mean {h['bytes_per_turn']} B (all the workflow wrote) for "
        f"{h['message_bytes_per_turn']} B of new messages (+{h['overhead_bytes']} B); "
        f"typical turn {h['bytes_typical_turn']} B, largest {h['bytes_largest_turn']} B; "
        f"a run's hand-over {h['handover_bytes']} B; a turn without compaction by event type: "
        f"{h['bytes_by_type']}"
    )
    print(
        f"first turn after eviction: long (run holds ~{e['long_runs_turns']} turns) p50 "
        f"{e['long']['p50']:.1f} / p99 {e['long']['p99']:.1f} ms vs fresh p50 "
        f"{e['fresh']['p50']:.1f} / p99 {e['fresh']['p99']:.1f} ms: p99 "
        f"{e['p99_above_fresh_ms']:+.1f} ms"
    )
    print(
        f"worker RSS with {m['sessions']} idle sessions: {m['rss_after_mb']:.0f} MB vs "
        f"{m['rss_before_mb']:.0f} MB before ({m['ratio']:.2f}x, "
        f"{m['kb_per_session']:.0f} KB per session)"
    )
    checks = {
        "turn 1,000 within 1.2x of turn 10 (p50 and p99)": max(c["p50_ratio"], c["p99_ratio"])
        <= 1.2,
        "history per turn (mean) <= new message bytes + 2 KB": h["overhead_bytes"] <= 2048,
        "evicted first turn p99 <= fresh + 100 ms": e["p99_above_fresh_ms"] <= 100,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return all(checks.values())


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller numbers, about 1 minute")
    parser.add_argument(
        "--turns-per-run", type=int, help=f"CHAT_MAX_TURNS_PER_RUN (default {STORED_RUN_TURNS})"
    )
    args = parser.parse_args(argv)
    opts = Options()
    if args.quick:
        opts = Options(long_turns=300, compare_turns=20, eviction_rounds=10, idle_sessions=100)
    override(parser, args, opts, ("turns_per_run",))
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    results = asyncio.run(run(opts))
    report(results)
    print(json.dumps(results, default=str), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
