"""`python -m bench.streaming`: what streaming a reply through us adds, against the provider.

Requirement (issue 4), all in one run: the added latency from the provider emitting a token to
the SSE client receiving it, p50 <= 50 ms and p99 <= 150 ms; the time-to-first-token overhead;
the history events and bytes of one streamed turn with a 20-token and a 2,000-token reply. And,
to weigh `temporalio.contrib.workflow_streams` against our design, the same history figures
(and, for information, its per-token latency) for replies streamed through it.

The provider is a real OpenAI-compatible HTTP server run by the benchmark in its own process
(`FakeProvider`): `POST /v1/chat/completions` with `stream: true` answers chunks in OpenAI's
format (role chunk, one chunk per token, finish chunk, usage chunk, `[DONE]`), N tokens at a
fixed pace, and records the wall time (`time.time()`) each token was handed to the socket. The
user message says how many tokens, at what pace, under which tag; token i reads `w<i>`, so a
client matches what it receives to when it was emitted (`GET /emitted/<tag>` after the turn).
Token 0 is written as soon as the request arrives (`--first-token-ms` delays it): the worst case
for us, as every token the provider writes before the gateway has found the worker is held back.

Sides, measured in alternating blocks (direct, ours, ours, direct, ...) so drift hits both:

  direct  the provider's own client (`OpenAICompatibleProvider.stream`, as the worker calls it)
          in this process, reading the fake server straight;
  ours    a client of the gateway: `POST /v1/sessions/{id}/messages/stream`, reading SSE
          `delta` events; the worker (a `python -m worker` process with CHAT_OPENAI_BASE_URL
          at the fake server, model `openai/bench-fake`) streams the provider and the gateway
          (`python -m api`) proxies the pieces it reads from the worker.

Per-token latency = receive time - emit time, over every token of the long turns; the added
latency is the difference of each side's own percentile. TTFT = first token received - request
sent, over every turn (long and short). "Backlog" tokens are those the provider emitted before
the client had received the first one, "live" tokens the rest.

History: on a running workflow after a warm-up turn, the events and bytes one turn adds (from
before it is sent until its workflow settles), ours (a session turn streamed through the
gateway) against a minimal workflow hosting a `WorkflowStream` whose activity calls the same
provider and publishes each piece to it (batched, as the library does, every `--wfs-batch-ms`),
read by a subscriber in this process. Its worker is its own process (`wfs-worker` below).

It is a report, not a test: it prints PASS/FAIL and exits 0 unless something crashed. Internal
entry points, started by the benchmark itself: `python -m bench.streaming provider --port P`
and `python -m bench.streaming wfs-worker --address A --task-queue Q --provider-url U`.
"""

import argparse
import asyncio
import json
import math
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
import uvloop
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.workflow_streams import (
    WorkflowStream,
    WorkflowStreamClient,
    WorkflowStreamItem,
)
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.providers.base import ProviderRequest
from activities.providers.openai_compat import OpenAICompatibleProvider
from bench import turns
from bench.args import override
from bench.procs import OTHER, free_port, spawn
from bench.stats import ratio, summary_ms
from bench.turns import RESULTS, ROOT, RunMark, Target, add_cpu, mark_run
from cli.sse import aiter_events
from common.ids import new_id, workflow_id
from common.process import exit_without_finalizers
from devstack.server import start_dev_env
from workflows.messages import ContextMessage

BENCH_USER = "bench"
MODEL_NAME = "bench-fake"
MODEL = f"openai/{MODEL_NAME}"
MAX_OUTPUT_TOKENS = 4096  # the fake ignores it; set so a 2,000-token reply is within bounds
TURN_TIMEOUT = 120.0  # a turn this slow means something is stuck, not slow
FIRST_TURN_TIMEOUT = 90.0  # includes the workers' start-up
WARMUP_TURNS = 1  # per session (or connection) before the latency blocks
SETTLE_STEP = 0.25  # a workflow has settled when its history stops growing for this long
SETTLE_MAX = 10.0
P50_LIMIT_MS = 50.0
P99_LIMIT_MS = 150.0
DIRECT, OURS, WFS = "direct", "ours", "workflow_streams"

PROVIDER_COMMAND = "provider"
WFS_WORKER_COMMAND = "wfs-worker"
WFS_WORKFLOW = "BenchWorkflowStreamTurns"
WFS_UPDATE = "turn"
WFS_ACTIVITY = "bench_wfs_reply"
DELTA_TOPIC = "delta"
END_TOPIC = "end"

DIRECTIVE = re.compile(r"bench-stream tag=(\S+) tokens=(\d+) pace_ms=([\d.]+) first_ms=([\d.]+)")
TOKEN = re.compile(r"w(\d+)")


def directive(tag: str, tokens: int, pace_ms: float, first_ms: float) -> str:
    """The user message: the fake provider answers `tokens` tokens, one per `pace_ms`."""
    return f"bench-stream tag={tag} tokens={tokens} pace_ms={pace_ms:g} first_ms={first_ms:g}"


def token_text(i: int) -> str:
    return f"w{i}" if i == 0 else f" w{i}"


@dataclass
class Options:
    blocks: int = 5
    long_turns: int = 4  # per side and block: per-token latency and TTFT
    long_tokens: int = 200
    short_turns: int = 8  # per side and block: TTFT only
    short_tokens: int = 5
    pace_ms: float = 10.0
    first_token_ms: float = 0.0
    sessions: int = 4  # ours: sessions the latency turns go round
    history_tokens: list[int] = field(default_factory=lambda: [20, 2000])
    history_pace_ms: float = 10.0
    wfs_batch_ms: float = 200.0  # the workflow_streams sample's LLM setting
    wfs_poll_cooldown_ms: float = 100.0  # the library's default


@dataclass
class Limit(Target):
    """A target in absolute units rather than a ratio."""

    unit: str = "ms"

    def describe(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        return f"{op} {self.limit:g} {self.unit}".rstrip()


# ---- the provider ----------------------------------------------------------------------------


class FakeProvider:
    """An OpenAI-compatible streaming server on plain asyncio streams (HTTP/1.1, keep-alive,
    chunked replies), so nothing but the socket sits between a token and its emit time."""

    def __init__(self) -> None:
        self._emitted: dict[str, dict[str, Any]] = {}

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        line = await reader.readline()
        if not line:
            return False
        method, target, _ = line.decode("latin-1").split(" ", 2)
        length = 0
        while True:
            header = await reader.readline()
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        if method == "POST" and target.endswith("/chat/completions"):
            await self._complete(json.loads(body), writer)
        elif method == "GET" and target.startswith("/emitted/"):
            record = self._emitted.pop(target.removeprefix("/emitted/"), None)
            _respond(writer, 200 if record else 404, record or {"detail": "unknown tag"})
        elif method == "GET" and target == "/healthz":
            _respond(writer, 200, {"ok": True})
        else:
            _respond(writer, 404, {"detail": f"no {method} {target}"})
        await writer.drain()
        return True

    async def _complete(self, payload: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        received = time.time()
        loop = asyncio.get_running_loop()
        start = loop.time()
        users = [m for m in payload.get("messages") or [] if m.get("role") == "user"]
        found = DIRECTIVE.search(str(users[-1].get("content") or "")) if users else None
        if found is None or not payload.get("stream"):
            _respond(writer, 400, {"error": {"message": "not a bench-stream request"}})
            return
        tag, count = found[1], int(found[2])
        pace, first = float(found[3]) / 1000, float(found[4]) / 1000
        model = str(payload.get("model") or MODEL_NAME)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        writer.write(_event(model, {"role": "assistant", "content": ""}))
        emitted: list[float] = []
        for i in range(count):
            delay = start + first + i * pace - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if writer.is_closing():
                return
            writer.write(_event(model, {"content": token_text(i)}))
            emitted.append(time.time())
            if writer.transport.get_write_buffer_size() > 64 * 1024:
                await writer.drain()
        # Kept before the last chunks go out, so a client that asks right after [DONE] finds it.
        self._emitted[tag] = {"received": received, "emitted": emitted}
        writer.write(_event(model, {}, finish="stop"))
        usage = {"prompt_tokens": 10, "completion_tokens": count, "total_tokens": 10 + count}
        writer.write(_chunk(_sse({"id": "chatcmpl-bench", "choices": [], "usage": usage})))
        writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _sse(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _event(model: str, delta: dict[str, str], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }
    return _chunk(_sse(body))


def _respond(writer: asyncio.StreamWriter, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    writer.write(
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n\r\n".encode()
        + data
    )


async def serve_provider(port: int) -> None:
    provider = FakeProvider()
    server = await asyncio.start_server(provider.connection, "127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def provider_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.streaming {PROVIDER_COMMAND}")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvloop.run(serve_provider(args.port))
    return 0


# ---- the workflow_streams baseline (its own worker process) ---------------------------------


class WfsActivities:
    """The model call of the baseline: the same provider client, each piece published."""

    def __init__(self, provider_url: str, batch: timedelta) -> None:
        self._provider = OpenAICompatibleProvider(provider_url, None, TURN_TIMEOUT)
        self._batch = batch

    @activity.defn(name=WFS_ACTIVITY)
    async def reply(self, content: str) -> str:
        stream = WorkflowStreamClient.from_within_activity(batch_interval=self._batch)
        async with stream:
            deltas = stream.topic(DELTA_TOPIC, type=str)

            async def on_delta(text: str) -> None:
                deltas.publish(text)

            request = ProviderRequest(
                model=MODEL_NAME,
                messages=[ContextMessage(role="user", content=content)],
                max_tokens=MAX_OUTPUT_TOKENS,
            )
            reply = await self._provider.stream(request, on_delta)
            # No force_flush: leaving the block flushes. On Python 3.11, force_flush right
            # before the exit can hang it for good: the exit cancels the flusher just as its
            # event wakes it, and 3.11's asyncio.wait_for swallows that cancellation.
            stream.topic(END_TOPIC, type=str).publish("")
        return reply.content

    async def aclose(self) -> None:
        await self._provider.aclose()


@workflow.defn(name=WFS_WORKFLOW)
class StreamTurnsWorkflow:
    """Hosts the stream; each update is one turn (one model call), like a session's."""

    @workflow.init
    def __init__(self) -> None:
        self.stream = WorkflowStream()
        self._stop = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._stop and workflow.all_handlers_finished())

    @workflow.update(name=WFS_UPDATE)
    async def turn(self, content: str) -> str:
        reply: str = await workflow.execute_activity(
            WFS_ACTIVITY, content, start_to_close_timeout=timedelta(minutes=2), result_type=str
        )
        return reply

    @workflow.signal(name="stop")
    def stop(self) -> None:
        self._stop = True


async def serve_wfs(address: str, task_queue: str, provider_url: str, batch_ms: float) -> None:
    client = await Client.connect(address)
    acts = WfsActivities(provider_url, timedelta(milliseconds=batch_ms))
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[StreamTurnsWorkflow],
        activities=[acts.reply],
        # Its module imports the whole benchmark; nothing here needs the sandbox's checks.
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        await stop.wait()
    await acts.aclose()


def wfs_worker_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.streaming {WFS_WORKER_COMMAND}")
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--provider-url", required=True)
    parser.add_argument("--batch-ms", type=float, default=Options().wfs_batch_ms)
    args = parser.parse_args(argv)
    uvloop.run(serve_wfs(args.address, args.task_queue, args.provider_url, args.batch_ms))
    exit_without_finalizers(0)
    return 0


# ---- one streamed turn, as a client sees it ---------------------------------------------------


@dataclass
class Timing:
    """Wall times (time.time()) of one turn: sent by the client, reached the provider, each
    token emitted by the provider and received by the client."""

    sent: float
    reached: float
    emitted: list[float]
    received: dict[int, float]
    pieces: int  # deltas the client got (one per token unless something coalesced them)
    done: float  # the client knew the reply was complete ([DONE], or turn_completed)

    def check(self, side: str) -> None:
        if set(self.received) != set(range(len(self.emitted))):
            raise RuntimeError(
                f"{side}: received {len(self.received)} of {len(self.emitted)} tokens"
            )

    @property
    def first(self) -> float:
        return min(self.received.values())

    @property
    def ttft(self) -> float:
        return self.first - self.sent

    @property
    def ending(self) -> float:
        """Last token emitted -> the client knows the reply is complete."""
        return self.done - self.emitted[-1]

    @property
    def dispatch(self) -> float:
        """Request sent -> the provider has it."""
        return self.reached - self.sent

    def latencies(self, which: str = "all") -> list[float]:
        first = self.first
        return [
            self.received[i] - at
            for i, at in enumerate(self.emitted)
            if which == "all" or (at >= first) == (which == "live")
        ]


def note(received: dict[int, float], text: str, now: float) -> None:
    """Every token in a piece was received when the piece was."""
    for found in TOKEN.finditer(text):
        received.setdefault(int(found[1]), now)


class ProviderLog:
    """Reads the fake provider's emit times for a tag."""

    def __init__(self, url: str) -> None:
        self._http = httpx.AsyncClient(base_url=url, timeout=10)

    async def timing(
        self, tag: str, sent: float, received: dict[int, float], pieces: int, done: float
    ) -> Timing:
        response = await self._http.get(f"/emitted/{tag}")
        response.raise_for_status()
        record = response.json()
        return Timing(sent, float(record["received"]), record["emitted"], received, pieces, done)

    async def aclose(self) -> None:
        await self._http.aclose()


class Side(Protocol):
    name: str
    label: str

    async def open(self, label: str) -> str:
        """A session (or workflow) to run turns on; returns its key."""
        ...

    async def turn(self, key: str, tokens: int, pace_ms: float, first_ms: float) -> Timing: ...

    def workflow_of(self, key: str) -> str: ...


class DirectSide:
    name = DIRECT
    label = "direct (provider client -> provider)"

    def __init__(self, provider_url: str, log: ProviderLog) -> None:
        self._provider = OpenAICompatibleProvider(provider_url, None, TURN_TIMEOUT)
        self._log = log

    async def open(self, label: str) -> str:
        return label

    def workflow_of(self, key: str) -> str:
        raise NotImplementedError("the direct side has no workflow")

    async def turn(self, key: str, tokens: int, pace_ms: float, first_ms: float) -> Timing:
        tag = uuid.uuid4().hex
        received: dict[int, float] = {}
        pieces = 0

        async def on_delta(text: str) -> None:
            nonlocal pieces
            note(received, text, time.time())
            pieces += 1

        request = ProviderRequest(
            model=MODEL_NAME,
            messages=[
                ContextMessage(role="user", content=directive(tag, tokens, pace_ms, first_ms))
            ],
            max_tokens=MAX_OUTPUT_TOKENS,
        )
        sent = time.time()
        await self._provider.stream(request, on_delta)
        timing = await self._log.timing(tag, sent, received, pieces, time.time())
        timing.check(self.name)
        return timing

    async def aclose(self) -> None:
        await self._provider.aclose()


class OursSide:
    name = OURS
    label = "ours (provider -> worker -> gateway SSE)"

    def __init__(self, http: httpx.AsyncClient, log: ProviderLog) -> None:
        self._http = http
        self._log = log
        self._tag = uuid.uuid4().hex[:8]

    async def open(self, label: str) -> str:
        session_id = f"stream-{self._tag}-{label}"
        response = await self._http.post(
            "/v1/sessions", json={"session_id": session_id, "model": MODEL}
        )
        if response.status_code != 201:
            raise RuntimeError(f"creating {session_id}: {response.status_code} {response.text}")
        return session_id

    def workflow_of(self, key: str) -> str:
        return workflow_id(BENCH_USER, key)

    async def turn(self, key: str, tokens: int, pace_ms: float, first_ms: float) -> Timing:
        tag = uuid.uuid4().hex
        body = {"message_id": new_id(), "content": directive(tag, tokens, pace_ms, first_ms)}
        received: dict[int, float] = {}
        pieces = 0
        completed: dict[str, Any] | None = None
        done = math.nan
        sent = time.time()
        async with self._http.stream(
            "POST", f"/v1/sessions/{key}/messages/stream", json=body
        ) as response:
            if response.status_code != 200:
                raise RuntimeError(
                    f"stream on {key}: {response.status_code} {await response.aread()!r}"
                )
            # Read to the end (right after turn_completed) so the connection is reused.
            async for event in aiter_events(response.aiter_lines()):
                now = time.time()
                if event.event == "delta":
                    note(received, str(event.data["text"]), now)
                    pieces += 1
                elif event.event in ("restart", "error"):
                    raise RuntimeError(f"{event.event} while streaming on {key}: {event.data}")
                elif event.event == "turn_completed":
                    completed, done = event.data, now
        if completed is None or completed.get("error"):
            raise RuntimeError(f"turn on {key} did not complete: {completed}")
        timing = await self._log.timing(tag, sent, received, pieces, done)
        timing.check(self.name)
        return timing


class WfsSide:
    name = WFS
    label = "workflow_streams (activity -> signals -> poll updates)"

    def __init__(
        self, client: Client, task_queue: str, log: ProviderLog, poll_cooldown: timedelta
    ) -> None:
        self._client = client
        self._task_queue = task_queue
        self._log = log
        self._cooldown = poll_cooldown
        self._tag = uuid.uuid4().hex[:8]
        self._handles: dict[str, WorkflowHandle[Any, Any]] = {}

    async def open(self, label: str) -> str:
        key = f"bench-wfs-{self._tag}-{label}"
        self._handles[key] = await self._client.start_workflow(
            WFS_WORKFLOW, id=key, task_queue=self._task_queue
        )
        return key

    def workflow_of(self, key: str) -> str:
        return key

    async def turn(self, key: str, tokens: int, pace_ms: float, first_ms: float) -> Timing:
        tag = uuid.uuid4().hex
        stream = WorkflowStreamClient.create(self._client, key)
        offset = await stream.get_offset()
        received: dict[int, float] = {}
        pieces = 0

        async def read() -> None:
            nonlocal pieces
            items = cast(
                AsyncGenerator[WorkflowStreamItem[Any], None],
                stream.subscribe(
                    [DELTA_TOPIC, END_TOPIC], from_offset=offset, poll_cooldown=self._cooldown
                ),
            )
            # Stopping at the end marker, before another poll: none is left waiting in the
            # workflow to be answered by (and counted in) the next turn.
            async with aclosing(items):
                async for item in items:
                    now = time.time()
                    if item.topic == END_TOPIC:
                        return
                    note(received, str(item.data), now)
                    pieces += 1

        reader = asyncio.create_task(read())
        sent = time.time()
        try:
            await self._handles[key].execute_update(
                WFS_UPDATE, directive(tag, tokens, pace_ms, first_ms), result_type=str
            )
            await asyncio.wait_for(asyncio.shield(reader), TURN_TIMEOUT)
        finally:
            if not reader.done():
                reader.cancel()
                with suppress(asyncio.CancelledError):
                    await reader
        timing = await self._log.timing(tag, sent, received, pieces, time.time())
        timing.check(self.name)
        return timing

    async def stop_all(self) -> None:
        for handle in self._handles.values():
            with suppress(Exception):
                await handle.signal("stop")


# ---- running the stack ------------------------------------------------------------------------


class StreamStack(turns.Stack):
    """Dev server, the fake provider, our worker and gateway, and the workflow_streams worker.

    Borrows bench.turns.Stack's watchdog, CPU meter and teardown; only the processes differ.
    """

    def __init__(self, tmp: Path, opts: Options) -> None:
        super().__init__(tmp, turns.Options())  # its options only concern its own processes
        self.stream_opts = opts
        self.wfs_queue = f"bench-wfs-{uuid.uuid4().hex[:8]}"
        self.provider_url = ""
        self.wfs_client: Client | None = None

    async def start(self) -> None:
        self.env = await start_dev_env(
            dev_server_database_filename=str(self.tmp / "temporal.db"),
            dev_server_log_level="error",
        )
        address = self.client.service_client.config.target_host
        self.wfs_client = await Client.connect(address)  # the SDK's default converter
        provider_port = free_port()
        self.provider_url = f"http://127.0.0.1:{provider_port}/v1"
        port = free_port()
        self.gateway_url = f"http://127.0.0.1:{port}"
        # cwd is the temp dir and CHAT_* is dropped, so local settings cannot change the run.
        base = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
        ours = {
            **base,
            "CHAT_TEMPORAL_ADDRESS": address,
            "CHAT_TASK_QUEUE": self.ours_queue,
            "CHAT_OPENAI_BASE_URL": self.provider_url,
            "CHAT_DEFAULT_MODEL": MODEL,
            "CHAT_MAX_OUTPUT_TOKENS": str(MAX_OUTPUT_TOKENS),
            "CHAT_API_KEYS": json.dumps({self.api_key: BENCH_USER}),
            "CHAT_GATEWAY_HOST": "127.0.0.1",
            "CHAT_GATEWAY_PORT": str(port),
        }
        me = ["-m", "bench.streaming"]
        provider_args = [*me, PROVIDER_COMMAND, "--port", str(provider_port)]
        wfs_args = [*me, WFS_WORKER_COMMAND, "--address", address, "--task-queue", self.wfs_queue]
        wfs_args += ["--provider-url", self.provider_url]
        wfs_args += ["--batch-ms", str(self.stream_opts.wfs_batch_ms)]
        for name, args, env in (
            ("fake provider", provider_args, base),
            ("our worker", ["-m", "worker"], ours),
            ("gateway", ["-m", "api"], ours),
            ("workflow_streams worker", wfs_args, base),
        ):
            self.children.append(spawn(name, args, env, self.tmp, self.tmp))
        # httpx's own transport: bench/transport.py speaks only Content-Length bodies, not SSE.
        self.http = httpx.AsyncClient(
            base_url=self.gateway_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=TURN_TIMEOUT,
        )
        await self._wait_for_gateway()
        await self._wait_for_provider()

    async def _wait_for_provider(self) -> None:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=1) as http:
            while time.monotonic() < deadline:
                self.check_children()
                with suppress(httpx.TransportError):
                    if (
                        await http.get(self.provider_url.removesuffix("/v1") + "/healthz")
                    ).is_success:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError("the fake provider did not answer within 30 s")


# ---- measurements -----------------------------------------------------------------------------


async def timed(
    side: Side, key: str, tokens: int, pace_ms: float, first_ms: float, limit: float = TURN_TIMEOUT
) -> Timing:
    async with asyncio.timeout(limit):
        return await side.turn(key, tokens, pace_ms, first_ms)


def _ms(values: Sequence[float]) -> list[float]:
    return [round(v * 1000, 3) for v in values]


async def measure_latency(
    stack: StreamStack, sides: Sequence[Side], opts: Options
) -> dict[str, Any]:
    """Long and short turns per side, in blocks whose order alternates."""
    keys: dict[str, list[str]] = {}
    for side in sides:
        keys[side.name] = [await side.open(f"lat{i}") for i in range(opts.sessions)]
    by_key: dict[str, list[Timing]] = {}  # each workflow's turns in order, warm-up included

    async def turn(side: Side, key: str, tokens: int, first_ms: float, limit: float) -> Timing:
        timing = await timed(side, key, tokens, opts.pace_ms, first_ms, limit)
        by_key.setdefault(key, []).append(timing)
        return timing

    for side in sides:  # warm-up: workers started, sessions loaded, connections open
        for key in keys[side.name]:
            for _ in range(WARMUP_TURNS):
                await turn(side, key, opts.short_tokens, 0.0, FIRST_TURN_TIMEOUT)
    long: dict[str, list[list[Timing]]] = {side.name: [] for side in sides}
    short: dict[str, list[Timing]] = {side.name: [] for side in sides}
    cpu: dict[str, dict[str, float]] = {side.name: {} for side in sides}
    done = Counter[str]()
    meter = stack.cpu_meter()
    first = opts.first_token_ms
    for block in range(opts.blocks):
        order = list(sides) if block % 2 == 0 else list(reversed(sides))
        for side in order:
            own = keys[side.name]
            block_turns: list[Timing] = []
            meter.mark()
            for _ in range(opts.long_turns):
                key = own[done[side.name] % len(own)]
                done[side.name] += 1
                block_turns.append(await turn(side, key, opts.long_tokens, first, TURN_TIMEOUT))
            add_cpu(cpu[side.name], meter.since())
            long[side.name].append(block_turns)
            for _ in range(opts.short_turns):
                key = own[done[side.name] % len(own)]
                done[side.name] += 1
                short[side.name].append(
                    await turn(side, key, opts.short_tokens, first, TURN_TIMEOUT)
                )
        print(f"  block {block + 1}/{opts.blocks} done")
    out: dict[str, Any] = {}
    for side in sides:
        every = [t for b in long[side.name] for t in b]
        all_turns = every + short[side.name]
        tokens = [s for t in every for s in t.latencies()]
        count = len(tokens)
        out[side.name] = {
            "label": side.label,
            "tokens_ms": summary_ms(tokens),
            "live_tokens_ms": summary_ms([s for t in every for s in t.latencies("live")]),
            "backlog_tokens_ms": summary_ms([s for t in every for s in t.latencies("backlog")]),
            "ttft_ms": summary_ms([t.ttft for t in all_turns]),
            "dispatch_ms": summary_ms([t.dispatch for t in all_turns]),
            "first_token_delivery_ms": summary_ms([t.latencies()[0] for t in all_turns]),
            "ending_ms": summary_ms([t.ending for t in all_turns]),
            "pieces_per_token": sum(t.pieces for t in every) / count if count else math.nan,
            "block_ms": [
                {p: summary_ms([s for t in b for s in t.latencies()])[p] for p in ("p50", "p99")}
                for b in long[side.name]
            ],
            "cpu_us_per_token": {k: 1e6 * v / count for k, v in cpu[side.name].items()}
            if count
            else {},
            "samples_ms": _ms(tokens),
            "ttft_samples_ms": _ms([t.ttft for t in all_turns]),
        }
        if side.name == OURS:
            turns_of = {side.workflow_of(key): by_key[key] for key in keys[side.name]}
            out[side.name]["ttft_steps_ms"] = await ttft_steps(stack.client, turns_of)
    return out


_SIGNALED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
_SCHEDULED = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
_STARTED = EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
TTFT_STEPS = (
    ("sent -> message signaled (gateway)", "sent", "signaled"),
    ("-> model call scheduled (workflow task)", "signaled", "scheduled"),
    ("-> started on the worker (matching)", "scheduled", "started"),
    ("-> provider has the request (activity)", "started", "reached"),
    ("-> client has token 0", "reached", "first"),
)


async def ttft_steps(client: Client, turns_of: dict[str, list[Timing]]) -> dict[str, Any]:
    """Our time to first token step by step, from the clients' times, the provider's and the
    event times of each session's history (one clock: all on this machine). A session's
    `send_message` signals and model calls pair with its turns in order; warm-ups are left out."""
    steps: dict[str, list[float]] = {label: [] for label, _, _ in TTFT_STEPS}
    for wf_id, timings in turns_of.items():
        marks: list[dict[str, float]] = []
        async for event in client.get_workflow_handle(wf_id).fetch_history_events():
            at = event.event_time.ToMicroseconds() / 1e6
            attrs = event.workflow_execution_signaled_event_attributes
            if event.event_type == _SIGNALED and attrs.signal_name == "send_message":
                marks.append({"signaled": at})
            elif marks and event.event_type == _SCHEDULED:
                marks[-1].setdefault("scheduled", at)
            elif marks and event.event_type == _STARTED:
                marks[-1].setdefault("started", at)  # written at completion, dated at start
        if len(marks) != len(timings):
            raise RuntimeError(f"{wf_id}: {len(marks)} messages in history, {len(timings)} sent")
        for mark, timing in list(zip(marks, timings, strict=True))[WARMUP_TURNS:]:
            times = {**mark, "sent": timing.sent, "reached": timing.reached, "first": timing.first}
            for label, start, end in TTFT_STEPS:
                steps[label].append(times[end] - times[start])
    return {label: summary_ms(values) for label, values in steps.items()}


async def settle(client: Client, wf_id: str) -> None:
    """Until the workflow's history stops growing (trailing workflow tasks of the turn)."""
    handle = client.get_workflow_handle(wf_id)
    last = -1
    deadline = time.monotonic() + SETTLE_MAX
    while time.monotonic() < deadline:
        length = (await handle.describe()).history_length
        if length == last:
            return
        last = length
        await asyncio.sleep(SETTLE_STEP)


async def turn_growth(client: Client, wf_id: str, before: RunMark) -> dict[str, Any]:
    """Events and bytes one turn added to its run (which must not have changed meanwhile)."""
    current = (await client.get_workflow_handle(wf_id).describe()).run_id
    if current != before.run_id:
        raise RuntimeError(f"{wf_id} continued as new while its history was being measured")
    history = await client.get_workflow_handle(wf_id, run_id=before.run_id).fetch_history()
    new = history.events[before.events :]
    events: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for event in new:
        kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        events[kind] += 1
        sizes[kind] += event.ByteSize()
    return {
        "events": len(new),
        "bytes": sum(sizes.values()),
        "events_by_type": dict(sorted(events.items())),
        "bytes_by_type": dict(sorted(sizes.items())),
    }


async def measure_history(client: Client, sides: Sequence[Side], opts: Options) -> dict[str, Any]:
    """One workflow per side, a warm-up turn, then one turn per reply length."""
    keys: dict[str, str] = {}
    for side in sides:
        keys[side.name] = await side.open("history")
        await timed(side, keys[side.name], 20, opts.history_pace_ms, 0.0, FIRST_TURN_TIMEOUT)
    out: dict[str, Any] = {side.name: {"label": side.label} for side in sides}
    for tokens in opts.history_tokens:
        for side in sides:
            wf_id = side.workflow_of(keys[side.name])
            await settle(client, wf_id)
            before = await mark_run(client, wf_id)
            timing = await timed(
                side, keys[side.name], tokens, opts.history_pace_ms, opts.first_token_ms
            )
            await settle(client, wf_id)
            growth = await turn_growth(client, wf_id, before)
            growth["tokens_ms"] = summary_ms(timing.latencies())
            growth["ttft_ms"] = timing.ttft * 1000
            growth["pieces"] = timing.pieces
            growth["reply_chars"] = sum(len(token_text(i)) for i in range(tokens))
            out[side.name][str(tokens)] = growth
            print(
                f"  {side.name}, {tokens}-token reply: {growth['events']} events, "
                f"{growth['bytes']:,} bytes"
            )
    return out


# ---- report -----------------------------------------------------------------------------------


def derive(lat: dict[str, Any]) -> dict[str, Any]:
    d, o = lat[DIRECT], lat[OURS]
    out: dict[str, Any] = {}
    for key in ("tokens_ms", "live_tokens_ms", "ttft_ms"):
        out[key] = {
            p: {
                "added_ms": o[key][p] - d[key][p],
                "ratio": ratio(o[key][p], d[key][p]),
            }
            for p in ("p50", "p90", "p99", "mean")
        }
    return out


def targets(results: dict[str, Any]) -> list[Target]:
    out: list[Target] = []
    if "derived" in results:
        added = results["derived"]["tokens_ms"]
        for p, limit in (("p50", P50_LIMIT_MS), ("p99", P99_LIMIT_MS)):
            name = f"added per-token latency {p} (ours - direct)"
            out.append(Limit(name, added[p]["added_ms"], limit, higher_is_better=False))
    history = results.get("history", {}).get(OURS, {})
    lengths = sorted(int(k) for k in history if k.isdigit())
    if len(lengths) >= 2:
        short, long = str(lengths[0]), str(lengths[-1])
        extra = history[long]["events"] - history[short]["events"]
        name = f"history events, {long}-token turn minus {short}-token turn (ours)"
        out.append(Limit(name, extra, 0, higher_is_better=False, unit="events"))
    return out


def print_report(results: dict[str, Any], checks: list[Target]) -> None:
    opts = results.get("options", {})
    if "latency" in results:
        _print_latency(results["latency"], results["derived"], opts)
    if "history" in results:
        _print_history(results["history"], opts)
    print()
    for check in checks:
        verdict = "PASS" if check.passed else "FAIL"
        print(f"{verdict}  {check.name}: {check.value:.2f}, target {check.describe()}")
    wfs = results.get("history", {}).get(WFS, {})
    lengths = sorted(int(k) for k in wfs if k.isdigit())
    if len(lengths) >= 2:
        extra = wfs[str(lengths[-1])]["events"] - wfs[str(lengths[0])]["events"]
        print(
            f"      (for comparison, workflow_streams: {extra:+d} events from the "
            f"{lengths[0]}-token to the {lengths[-1]}-token turn)"
        )


def _row(label: str, ms: dict[str, float], keys: Sequence[str] = ("p50", "p90", "p99")) -> str:
    return f"{label:46}" + "".join(f"{ms[k]:>9.2f}" for k in keys)


def _print_latency(lat: dict[str, Any], derived: dict[str, Any], opts: dict[str, Any]) -> None:
    d, o = lat[DIRECT], lat[OURS]
    n = int(d["tokens_ms"]["n"])
    print()
    print(
        f"per-token latency, provider emit -> client receive, ms ({n} tokens per side: "
        f"{opts.get('long_tokens')}-token replies at {opts.get('pace_ms')} ms/token, "
        f"first token after {opts.get('first_token_ms')} ms)"
    )
    print(f"{'':46}{'p50':>9}{'p90':>9}{'p99':>9}{'mean':>9}{'max':>9}")
    keys = ("p50", "p90", "p99", "mean", "max")
    for side in (d, o):
        print(_row(side["label"], side["tokens_ms"], keys))
    added = derived["tokens_ms"]
    print(
        f"{'added (ours - direct), difference of pcts':46}"
        + "".join(f"{added[p]['added_ms']:>9.2f}" for p in ("p50", "p90", "p99", "mean"))
    )
    print(
        f"{'ours / direct':46}"
        + "".join(f"{added[p]['ratio']:>9.2f}" for p in ("p50", "p90", "p99", "mean"))
    )
    for which, title in (("live_tokens_ms", "live"), ("backlog_tokens_ms", "backlog")):
        for side in (d, o):
            ms = side[which]
            label = f"  {title} tokens, {side['label'].split(' ')[0]} (n={int(ms['n'])})"
            print(_row(label, ms, keys) if ms["n"] else f"{label}: none")
    print(
        "  (backlog: emitted before the client had its first token; live: the rest. "
        f"pieces per token: direct {d['pieces_per_token']:.2f}, ours {o['pieces_per_token']:.2f})"
    )
    print(
        "  ours per block, p50 / p99: "
        + ", ".join(f"{b['p50']:.1f}/{b['p99']:.1f}" for b in o["block_ms"])
        + "; direct: "
        + ", ".join(f"{b['p50']:.1f}/{b['p99']:.1f}" for b in d["block_ms"])
    )
    print()
    turns_n = int(d["ttft_ms"]["n"])
    title = f"time to first token, ms ({turns_n} turns per side)"
    print(f"{title:46}{'p50':>9}{'p90':>9}{'p99':>9}")
    for side in (d, o):
        print(_row(side["label"], side["ttft_ms"]))
        print(_row("  request sent -> provider has it", side["dispatch_ms"]))
        print(_row("  token 0 emitted -> received", side["first_token_delivery_ms"]))
    for side in (d, o):
        name = side["label"].split(" (")[0]
        print(_row(f"last token emitted -> {name} knows it is complete", side["ending_ms"]))
    print("  ours step by step (from history event times):")
    for label, ms in o.get("ttft_steps_ms", {}).items():
        print(_row(f"    {label}", ms))
    ttft = derived["ttft_ms"]
    print(
        f"{'TTFT overhead (ours - direct)':46}"
        + "".join(f"{ttft[p]['added_ms']:>9.2f}" for p in ("p50", "p90", "p99"))
    )
    print()
    print("CPU us per streamed token, long turns, by process (per-turn work included)")
    procs = sorted({p for s in (d, o) for p in s["cpu_us_per_token"]} - {OTHER})
    print(f"{'':46}{'direct':>9}{'ours':>9}")
    for proc in [*procs, OTHER]:
        cells = "".join(f"{s['cpu_us_per_token'].get(proc, 0.0):>9.0f}" for s in (d, o))
        label = f"({OTHER}, not the bench)" if proc == OTHER else proc
        print(f"{label:46}{cells}")


def _print_history(h: dict[str, Any], opts: dict[str, Any]) -> None:
    print()
    print(
        f"history added by one streamed turn (pace {opts.get('history_pace_ms')} ms/token; "
        f"workflow_streams batches every {opts.get('wfs_batch_ms')} ms, polls with "
        f"{opts.get('wfs_poll_cooldown_ms')} ms cooldown)"
    )
    print(f"{'':46}{'events':>8}{'bytes':>10}{'pieces':>8}{'tok p50':>9}{'tok p99':>9}{'ttft':>8}")
    for name in (OURS, WFS):
        side = h.get(name, {})
        for key in sorted((k for k in side if k.isdigit()), key=int):
            g = side[key]
            label = f"{name}, {key} tokens ({g['reply_chars']:,} chars)"
            print(
                f"{label:46}{g['events']:>8}{g['bytes']:>10,}{g['pieces']:>8}"
                f"{g['tokens_ms']['p50']:>9.1f}{g['tokens_ms']['p99']:>9.1f}{g['ttft_ms']:>8.1f}"
            )
    for name in (OURS, WFS):
        side = h.get(name, {})
        lengths = sorted((k for k in side if k.isdigit()), key=int)
        if not lengths:
            continue
        longest = side[lengths[-1]]
        print(f"  {name}, {lengths[-1]}-token reply by event type (events, bytes):")
        for kind, count in longest["events_by_type"].items():
            print(f"    {kind:42}{count:>8}{longest['bytes_by_type'][kind]:>10,}")


# ---- entry point ------------------------------------------------------------------------------


async def run(opts: Options, results: dict[str, Any], stamp: str) -> None:
    """Fill `results` part by part, so a crash still leaves what was measured before it."""
    results["options"] = {
        "long_tokens": opts.long_tokens,
        "pace_ms": opts.pace_ms,
        "first_token_ms": opts.first_token_ms,
        "history_pace_ms": opts.history_pace_ms,
        "wfs_batch_ms": opts.wfs_batch_ms,
        "wfs_poll_cooldown_ms": opts.wfs_poll_cooldown_ms,
    }
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp:
        stack = StreamStack(Path(tmp), opts)
        log: ProviderLog | None = None
        direct: DirectSide | None = None
        wfs: WfsSide | None = None
        try:
            await stack.start()
            assert stack.http is not None and stack.wfs_client is not None
            log = ProviderLog(stack.provider_url.removesuffix("/v1"))
            direct = DirectSide(stack.provider_url, log)
            ours = OursSide(stack.http, log)
            cooldown = timedelta(milliseconds=opts.wfs_poll_cooldown_ms)
            wfs = WfsSide(stack.wfs_client, stack.wfs_queue, log, cooldown)
            per_side = opts.blocks * (opts.long_turns + opts.short_turns)
            print(
                f"latency: {per_side} turns per side in {opts.blocks} alternating blocks "
                f"({opts.long_turns} x {opts.long_tokens} tokens and {opts.short_turns} x "
                f"{opts.short_tokens} tokens per block, {opts.pace_ms:g} ms/token)"
            )
            sides: list[Side] = [direct, ours]
            results["latency"] = await stack.guarded(measure_latency(stack, sides, opts))
            results["derived"] = derive(results["latency"])
            print(f"history: {', '.join(map(str, opts.history_tokens))}-token replies per side")
            results["history"] = await stack.guarded(
                measure_history(stack.client, [ours, wfs], opts)
            )
        except BaseException:
            try:
                await _close(stack, log, direct, wfs)
            finally:
                turns.keep_logs(Path(tmp), RESULTS / f"logs-streaming-{stamp}")
            raise
        await _close(stack, log, direct, wfs)


async def _close(
    stack: StreamStack, log: ProviderLog | None, direct: DirectSide | None, wfs: WfsSide | None
) -> None:
    if wfs is not None:
        await wfs.stop_all()
    for closing in (log, direct):
        if closing is not None:
            await closing.aclose()
    await stack.close()


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.streaming",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Options()
    parser.add_argument("--blocks", type=int, help=f"alternating blocks (default {d.blocks})")
    parser.add_argument(
        "--long-turns", type=int, help=f"long turns per side and block (default {d.long_turns})"
    )
    parser.add_argument(
        "--long-tokens", type=int, help=f"tokens of a long turn (default {d.long_tokens})"
    )
    parser.add_argument(
        "--short-turns", type=int, help=f"short turns per side and block (default {d.short_turns})"
    )
    parser.add_argument("--pace-ms", type=float, help=f"ms between tokens (default {d.pace_ms:g})")
    parser.add_argument(
        "--first-token-ms",
        type=float,
        help="ms before the provider's first token (default 0: the worst case for us)",
    )
    parser.add_argument(
        "--history-pace-ms",
        type=float,
        help=f"ms between tokens in the history turns (default {d.history_pace_ms:g})",
    )
    parser.add_argument(
        "--wfs-batch-ms",
        type=float,
        help=f"workflow_streams batch interval (default {d.wfs_batch_ms:g})",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args(argv)
    opts = Options()
    if args.quick:
        opts = Options(
            blocks=2, long_turns=2, long_tokens=100, short_turns=3, sessions=2, history_pace_ms=2.0
        )
    override(parser, args, opts, ("blocks", "long_turns", "long_tokens", "short_turns"))
    override(
        parser,
        args,
        opts,
        ("pace_ms", "first_token_ms", "history_pace_ms", "wfs_batch_ms"),
        least=0,
    )
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [PROVIDER_COMMAND]:
        return provider_main(args[1:])
    if args[:1] == [WFS_WORKER_COMMAND]:
        return wfs_worker_main(args[1:])
    return turns.run_benchmark("streaming", argv, parse_args, run, targets, print_report)


if __name__ == "__main__":
    sys.exit(main())
