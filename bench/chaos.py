"""`python -m bench.chaos [--quick]`: sessions keep chatting while their processes die.

It starts its own Temporal dev server (on a SQLite file in a temp dir, so it can be killed
and started again on the same file and port), 3 worker processes and 2 gateway processes.
Client sessions each send several messages with their own message ids, every request to
either gateway, and retry connection errors, timeouts, 429 and 5xx with the same session
and message id, as a client should. Half the sessions wait for replies in the POST
(default), half send with `?wait=false` and poll the reply URL. Meanwhile a chaos task
kill -9s a random worker every few seconds and starts a replacement at once (as a pod
supervisor would), restarts each gateway once (one with SIGTERM, one with kill -9) and
kill -9s the dev server once, starting it again on the same file and port.

At the end every session's history is read through the API: each message a client sent must
appear exactly once, in send order, each followed by exactly one reply, the one its client
was given. It prints turns answered, messages lost and duplicated, turn latency as clients
saw it (retries included) and what the chaos did, and exits 1 unless nothing was lost,
duplicated, out of order or unanswered. `tests/test_chaos.py` runs `--quick`'s sizes.
"""

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType, TimeoutType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from bench.args import override
from bench.procs import Child, free_port, spawn, spawn_binary
from bench.stats import percentile
from common.ids import workflow_id
from devstack.server import FAST_SERVER_ARGS, binary, search_attribute_args

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
USER = "chaos"
MODEL = "scripted/echo"
NAMESPACE = "default"

# Chaos actions.
KILL_WORKER = "kill -9 a worker"
KILL_GATEWAY = "kill -9 a gateway"
TERM_GATEWAY = "SIGTERM a gateway"
RESTART_SERVER = "kill -9 the dev server"
ACTIONS = (KILL_WORKER, KILL_GATEWAY, TERM_GATEWAY, RESTART_SERVER)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REQUEST_TIMEOUT = 30.0  # one HTTP request; then the client retries, as clients do
POLL_INTERVAL = 0.2  # between GETs of a reply URL that answered 202
START_TIMEOUT = 90.0  # a process or the dev server coming up on a loaded 2-core machine


@dataclass
class Options:
    sessions: int = 60
    turns: int = 20
    workers: int = 3
    gateways: int = 2
    model_delay: float = 0.5  # the scripted model's `[[delay=...]]`: a turn in flight a while
    think: tuple[float, float] = (0.2, 2.0)  # a client's pause between a reply and its next message
    kill_every: tuple[float, float] | None = (4.0, 8.0)  # seconds between worker kills
    # (fraction of all turns answered, action): each happens once, while turns are in flight.
    milestones: list[tuple[float, str]] = field(
        default_factory=lambda: [(0.2, TERM_GATEWAY), (0.45, RESTART_SERVER), (0.7, KILL_GATEWAY)]
    )
    server_down: float = 3.0  # seconds the dev server stays dead before it is started again
    doubled: float = 0.1  # the share of messages a client also sends to the other gateway at once
    reply_wait_seconds: int = 10  # CHAT_REPLY_WAIT_SECONDS: past it a waiting POST answers 202
    turn_deadline: float = 300.0  # a turn not answered by then is given up on
    seed: int | None = None


def quick_options() -> Options:
    """The test suite's run: 10 sessions x 3 turns; one worker killed, one gateway killed,
    one dev-server restart, each while turns are in flight."""
    return Options(
        sessions=10,
        turns=3,
        model_delay=1.0,
        think=(0.1, 0.5),
        kill_every=None,
        milestones=[(0.1, KILL_WORKER), (0.3, KILL_GATEWAY), (0.55, RESTART_SERVER)],
        server_down=2.0,
        doubled=0.2,
        turn_deadline=150.0,
    )


class HarnessError(Exception):
    """The harness itself could not go on (a process would not start): not a finding."""


@dataclass
class Event:
    at: float  # seconds since the cluster started
    what: str


# ---- the processes -------------------------------------------------------------------------


class Cluster:
    """The dev server, the workers and the gateways, and what was done to them."""

    def __init__(
        self,
        workdir: Path,
        *,
        workers: int = 3,
        gateways: int = 2,
        reply_wait_seconds: int = 60,
        server_down: float = 3.0,
        seed: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.worker_count = workers
        self.reply_wait_seconds = reply_wait_seconds
        self.server_down = server_down
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self.rng = random.Random(self.seed)
        self.server_port = free_port()
        self.address = f"127.0.0.1:{self.server_port}"
        self.gateway_ports = [free_port() for _ in range(gateways)]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.gateway_ports]
        self.api_key = f"chaos-{uuid.uuid4().hex}"
        self.task_queue = f"chaos-{uuid.uuid4().hex[:8]}"
        self.server: Child | None = None
        self.workers: list[Child] = []
        self.gateways: list[Child | None] = [None] * gateways
        self.started: list[Child] = []  # every process ever started, to stop them all
        self.events: list[Event] = []
        self.done: Counter[str] = Counter()  # chaos actions carried out
        self.server_downtimes: list[float] = []
        self._names: Counter[str] = Counter()
        self._gateway_restarts = 0
        self._server_up = asyncio.Event()  # set while the dev server serves
        self._t0 = time.monotonic()
        self.t0_wall = time.time()

    # -- logging

    def now(self) -> float:
        return time.monotonic() - self._t0

    def note(self, what: str) -> None:
        self.events.append(Event(self.now(), what))

    # -- starting

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
        return {
            **base,
            "CHAT_TEMPORAL_ADDRESS": self.address,
            "CHAT_TASK_QUEUE": self.task_queue,
            "CHAT_SCRIPTED_PROVIDER_ENABLED": "true",
            "CHAT_DEFAULT_MODEL": MODEL,
            "CHAT_API_KEYS": json.dumps({self.api_key: USER}),
            "CHAT_REPLY_WAIT_SECONDS": str(self.reply_wait_seconds),
            "CHAT_GRACEFUL_SHUTDOWN_SECONDS": "5",
            "CHAT_GATEWAY_HOST": "127.0.0.1",
        }

    def _name(self, kind: str) -> str:
        self._names[kind] += 1
        return f"{kind}-{self._names[kind]}"

    def _server_argv(self) -> list[str]:
        return [
            str(binary("temporal")),
            "server",
            "start-dev",
            "--db-filename",
            str(self.workdir / "temporal.db"),
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.server_port),
            "--headless",
            "--log-level",
            "warn",
            *search_attribute_args(),
            *FAST_SERVER_ARGS,
            "--dynamic-config-value",
            "frontend.enableServerVersionCheck=false",
        ]

    async def start(self) -> None:
        await self.start_server()
        for _ in range(self.worker_count):
            self.start_worker()
        await asyncio.gather(*(self.start_gateway(i) for i in range(len(self.gateways))))

    async def start_server(self) -> None:
        self.server = spawn_binary(
            "temporal", self._server_argv(), self.env(), self.workdir, self.workdir
        )
        self.started.append(self.server)
        await self._until_server_serves(self.server)
        self._server_up.set()

    async def _until_server_serves(self, server: Child) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not server.alive():
                raise HarnessError(f"the dev server exited during start:\n{server.tail()}")
            with suppress(Exception):  # a readiness probe: anything but an answer is "not yet"
                async with asyncio.timeout(3):
                    client = await Client.connect(self.address, namespace=NAMESPACE)
                    await client.workflow_service.describe_namespace(
                        DescribeNamespaceRequest(namespace=NAMESPACE)
                    )
                    return
            await asyncio.sleep(0.2)
        raise HarnessError(f"the dev server did not serve within {START_TIMEOUT:.0f} s")

    def start_worker(self) -> Child:
        worker = spawn(
            self._name("worker"), ["-m", "worker"], self.env(), self.workdir, self.workdir
        )
        self.workers.append(worker)
        self.started.append(worker)
        return worker

    async def set_workers(self, count: int) -> None:
        """Exactly `count` fresh workers: the running ones drain (SIGTERM) and new ones start."""
        old, self.workers = self.workers, []
        await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in old))
        for _ in range(count):
            self.start_worker()

    async def start_gateway(self, index: int) -> Child:
        env = {**self.env(), "CHAT_GATEWAY_PORT": str(self.gateway_ports[index])}
        for _ in range(5):  # the old process may hold the port a moment after it died
            name = self._name(f"gateway{index}")
            gateway = spawn(name, ["-m", "api"], env, self.workdir, self.workdir)
            self.started.append(gateway)
            if await self._until_gateway_serves(gateway, self.urls[index]):
                self.gateways[index] = gateway
                return gateway
            await asyncio.sleep(1)
        raise HarnessError(f"gateway {index} would not start; its log ends:\n{gateway.tail()}")

    async def _until_gateway_serves(self, gateway: Child, url: str) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if not gateway.alive():
                    return False
                with suppress(httpx.TransportError):
                    if (await http.get(f"{url}/healthz")).status_code == 200:
                        return True
                await asyncio.sleep(0.1)
        raise HarnessError(f"{gateway.name} did not answer /healthz within {START_TIMEOUT:.0f} s")

    # -- chaos

    async def act(self, action: str) -> None:
        if action == KILL_WORKER:
            await self.kill_worker()
        elif action in (KILL_GATEWAY, TERM_GATEWAY):
            await self.restart_gateway(hard=action == KILL_GATEWAY)
        elif action == RESTART_SERVER:
            await self.restart_server()
        else:
            raise ValueError(f"unknown chaos action {action!r}")
        self.done[action] += 1

    async def kill_worker(self) -> None:
        # Not while the dev server is down: a process that cannot reach Temporal at start
        # exits, and what that tests is not what this run is about.
        await self._server_up.wait()
        live = [w for w in self.workers if w.alive()]
        if not live:
            return
        victim = self.rng.choice(live)
        self.workers.remove(victim)
        await asyncio.to_thread(victim.kill_hard)
        replacement = self.start_worker()
        self.note(f"kill -9 {victim.name}; started {replacement.name}")

    async def restart_gateway(self, *, hard: bool) -> None:
        # Each restart takes the next gateway in turn, so with two restarts both get one.
        index = self._gateway_restarts % len(self.gateways)
        self._gateway_restarts += 1
        old = self.gateways[index]
        self.gateways[index] = None
        if old is not None:
            if hard:
                await asyncio.to_thread(old.kill_hard)
            else:
                await asyncio.to_thread(old.stop)  # uvicorn finishes requests in flight first
        how = "kill -9" if hard else "SIGTERM"
        self.note(f"{how} gateway {index} ({old.name if old else 'down'})")
        await self._server_up.wait()
        new = await self.start_gateway(index)
        self.note(f"gateway {index} serving again ({new.name})")

    async def restart_server(self) -> None:
        old, self.server = self.server, None
        self._server_up.clear()
        if old is not None:
            await asyncio.to_thread(old.kill_hard)
        self.note("kill -9 the dev server")
        down = time.monotonic()
        await asyncio.sleep(self.server_down)  # an outage, not only a blip
        server = spawn_binary(
            "temporal", self._server_argv(), self.env(), self.workdir, self.workdir
        )
        self.started.append(server)
        await self._until_server_serves(server)
        self.server = server
        self._server_up.set()
        downtime = time.monotonic() - down
        self.server_downtimes.append(downtime)
        self.note(f"dev server serving again, same file and port ({downtime:.1f} s down)")

    async def supervise(self) -> None:
        """What a supervisor does: replace whatever died on its own (and say so: that is a
        finding, not chaos)."""
        if self.server is not None and not self.server.alive():
            self.note(f"the dev server exited by itself ({self.server.proc.returncode})")
            await self.restart_server()
        if not self._server_up.is_set():
            return
        for worker in [w for w in self.workers if not w.alive()]:
            self.workers.remove(worker)
            replacement = self.start_worker()
            self.note(
                f"{worker.name} exited by itself ({worker.proc.returncode}); "
                f"started {replacement.name}"
            )
        for index, gateway in enumerate(self.gateways):
            if gateway is not None and not gateway.alive():
                self.note(f"{gateway.name} exited by itself ({gateway.proc.returncode})")
                self.gateways[index] = None
                await self.start_gateway(index)

    # -- stopping

    def pids(self) -> dict[str, int]:
        """The live processes, by name, for CPU accounting."""
        out: dict[str, int] = {}
        if self.server is not None:
            out["dev server"] = self.server.proc.pid
        for worker in self.workers:
            out[worker.name] = worker.proc.pid
        for gateway in self.gateways:
            if gateway is not None:
                out[gateway.name] = gateway.proc.pid
        return out

    def alive(self) -> list[Child]:
        return [child for child in self.started if child.alive()]

    async def close(self) -> None:
        """Stop everything this cluster ever started: gateways and workers first (SIGTERM,
        kill after a while), then the dev server."""
        rest = [c for c in self.started if c is not self.server and c.alive()]
        await asyncio.gather(*(asyncio.to_thread(child.stop) for child in rest))
        for child in self.started:  # the dev server, and anything a failure left behind
            await asyncio.to_thread(child.stop)

    def kill_all(self) -> None:
        """kill -9 whatever is still running: for a `finally` that must not wait on a loop."""
        for child in self.started:
            child.kill_hard()


# ---- the clients ---------------------------------------------------------------------------


@dataclass
class Turn:
    session: str
    message_id: str
    text: str
    latency: float | None = None  # first send to reply, retries included; None: no reply
    replies: list[dict[str, Any]] = field(default_factory=list)  # as the client was given it
    acked: bool = False  # the service said 200 or 202 to it at least once
    forgotten: bool = False  # acknowledged, then reported unknown (a lost message)
    requests: int = 0
    sent_wall: float = 0.0  # time.time() when first sent, to find its events in Temporal


class Load:
    """The client sessions: each sends its turns one after another, through either gateway."""

    def __init__(self, opts: Options, cluster: Cluster, rng: random.Random) -> None:
        self.opts = opts
        self.rng = rng
        self.tag = uuid.uuid4().hex[:6]
        self.https = [
            httpx.AsyncClient(
                base_url=url,
                headers={"Authorization": f"Bearer {cluster.api_key}"},
                timeout=None,  # each request has its own asyncio timeout
                limits=httpx.Limits(max_connections=None, keepalive_expiry=2.0),
            )
            for url in cluster.urls
        ]
        self.sessions: dict[str, list[Turn]] = {}
        self.total = opts.sessions * opts.turns
        self.answered = 0
        self.retried: Counter[str] = Counter()  # why requests were retried
        self.doubled = 0  # messages also sent to the other gateway at once
        self._doubles: set[asyncio.Task[None]] = set()
        self.anomalies: list[str] = []  # answers a correct service never gives

    def progress(self) -> float:
        return self.answered / self.total if self.total else 1.0

    async def aclose(self) -> None:
        for http in self.https:
            await http.aclose()

    async def run(self) -> None:
        await asyncio.gather(*(self._session(i) for i in range(self.opts.sessions)))
        await asyncio.gather(*self._doubles)

    async def _request(
        self,
        method: str,
        path: str,
        gateway: int,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        seconds: float = REQUEST_TIMEOUT,
    ) -> httpx.Response | None:
        """The response, or None after a failure a client retries (counted by its reason)."""
        http = self.https[gateway % len(self.https)]
        try:
            async with asyncio.timeout(seconds):
                response = await http.request(method, path, json=body, params=params)
        except TimeoutError:
            self.retried["client timeout"] += 1
            return None
        except httpx.TransportError as err:
            self.retried[type(err).__name__] += 1
            return None
        if response.status_code in RETRY_STATUSES:
            self.retried[f"HTTP {response.status_code}"] += 1
            return None
        return response

    async def _backoff(self, failures: int) -> None:
        await asyncio.sleep(min(2.0, 0.1 * 2 ** min(failures, 5)) * self.rng.uniform(0.5, 1.0))

    async def _session(self, index: int) -> None:
        session_id = f"chaos-{self.tag}-{index:03d}"
        turns: list[Turn] = []
        self.sessions[session_id] = turns
        await asyncio.sleep(self.rng.uniform(0, self.opts.think[1]))  # users do not start at once
        if not await self._create(index, session_id):
            return
        waits = index % 2 == 0  # half wait in the POST, half send with ?wait=false and poll
        for n in range(self.opts.turns):
            turn = Turn(session_id, f"m{n:03d}", f"session {index} message {n}")
            turns.append(turn)
            await self._send(index + n, turn, waits)
            if turn.latency is None:
                return  # given up: the next message would only queue behind it
            self.answered += 1
            await asyncio.sleep(self.rng.uniform(*self.opts.think))

    async def _create(self, gateway: int, session_id: str) -> bool:
        deadline = time.monotonic() + self.opts.turn_deadline
        failures = 0
        while time.monotonic() < deadline:
            response = await self._request(
                "POST", "/v1/sessions", gateway + failures, body={"session_id": session_id}
            )
            if response is not None:
                if response.status_code == 201:
                    return True
                if response.status_code == 409 and failures:
                    return True  # an earlier attempt of ours created it before its answer got lost
                self.anomalies.append(f"{session_id}: create answered {_said(response)}")
            failures += 1
            await self._backoff(failures)
        self.anomalies.append(f"{session_id}: never created")
        return False

    async def _send(self, gateway: int, turn: Turn, waits: bool) -> None:
        """Send until answered: the same message id every time, any gateway."""
        delay = self.opts.model_delay
        content = f"[[delay={delay:g}]] {turn.text}" if delay > 0 else turn.text
        path = f"/v1/sessions/{turn.session}/messages"
        reply_url = f"{path}/{turn.message_id}"
        params = None if waits else {"wait": "false"}
        limit = self.opts.reply_wait_seconds + REQUEST_TIMEOUT if waits else REQUEST_TIMEOUT
        start = time.monotonic()
        turn.sent_wall = time.time()
        failures = 0
        pending = False  # acknowledged with 202: poll the reply URL
        if self.rng.random() < self.opts.doubled:
            # The same message to the other gateway at once, as a client that gave up too
            # early (or a proxy retrying) would: still one message, and the same reply.
            body = {"content": content, "message_id": turn.message_id}
            double = self._request("POST", path, gateway, body=body, params=params, seconds=limit)
            self._doubles.add(asyncio.create_task(self._double(turn, double)))
        while time.monotonic() - start < self.opts.turn_deadline:
            gateway += 1  # every request may go to either gateway, as behind a load balancer
            turn.requests += 1
            if not pending:
                body = {"content": content, "message_id": turn.message_id}
                response = await self._request(
                    "POST", path, gateway, body=body, params=params, seconds=limit
                )
            else:
                response = await self._request("GET", reply_url, gateway)
            if response is None:
                failures += 1
                await (asyncio.sleep(POLL_INTERVAL) if pending else self._backoff(failures))
                continue
            if response.status_code == 200:
                turn.acked = True
                turn.replies.append(response.json()["reply"])
                turn.latency = time.monotonic() - start
                return
            if response.status_code == 202:
                turn.acked = pending = True
                await asyncio.sleep(POLL_INTERVAL)
                continue
            if pending and response.status_code == 404:
                # Acknowledged, and now unknown: that message was lost. A client sends it again.
                turn.forgotten = True
                pending = False
            self.anomalies.append(
                f"{turn.session}/{turn.message_id}: {response.request.method} answered "
                f"{_said(response)}"
            )
            failures += 1
            await self._backoff(failures)

    async def _double(self, turn: Turn, sent: Awaitable[httpx.Response | None]) -> None:
        self.doubled += 1
        response = await sent
        if response is not None and response.status_code == 200:
            turn.replies.append(response.json()["reply"])
        elif response is not None and response.status_code != 202:
            self.anomalies.append(f"{turn.session}/{turn.message_id}: {_said(response)}")

    # -- reading back

    async def history(self, session_id: str) -> list[dict[str, Any]]:
        """The session's whole history through the API (paged), retrying like any client."""
        messages: list[dict[str, Any]] = []
        after = 0
        failures = 0
        deadline = time.monotonic() + self.opts.turn_deadline
        while time.monotonic() < deadline:
            response = await self._request(
                "GET",
                f"/v1/sessions/{session_id}/messages",
                failures,
                params={"after": str(after), "limit": "500"},
            )
            if response is None or response.status_code != 200:
                if response is not None:
                    self.anomalies.append(f"{session_id}: history answered {_said(response)}")
                failures += 1
                await self._backoff(failures)
                continue
            page = response.json()
            messages += page["messages"]
            if page["next"] is None:
                return messages
            after = page["next"]
        raise HarnessError(f"could not read the history of {session_id}")


def _said(response: httpx.Response) -> str:
    return f"{response.status_code} {response.text[:200]}"


# ---- checking ------------------------------------------------------------------------------


@dataclass
class Report:
    sessions: int
    turns_planned: int
    turns_sent: int = 0
    turns_answered: int = 0
    lost: int = 0  # acknowledged, then missing from history or reported unknown
    duplicated: int = 0  # extra copies of a message or of a reply
    out_of_order: int = 0  # sessions whose history is not [message, its reply] in send order
    wrong_content: int = 0  # a stored message or reply that is not what was sent / echoed
    reply_changed: int = 0  # the stored reply differs from the one the client was given
    error_replies: int = 0  # turns answered with a failed model call
    unanswered: int = 0  # turns given up on (never acknowledged, or no reply by the deadline)
    latencies: list[float] = field(default_factory=list)
    retried: dict[str, int] = field(default_factory=dict)
    doubled: int = 0  # messages sent to both gateways at once on purpose
    anomalies: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    done: dict[str, int] = field(default_factory=dict)
    missed: list[str] = field(default_factory=list)  # milestones that never happened
    server_downtimes: list[float] = field(default_factory=list)
    temporal: dict[str, int] = field(default_factory=dict)  # what Temporal's histories show
    worst: str = ""  # the slowest turn
    worst_timeline: list[str] = field(default_factory=list)  # its session's events meanwhile
    seconds: float = 0.0
    seed: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.turns_answered == self.turns_planned
            and not (self.lost or self.duplicated or self.out_of_order or self.wrong_content)
            and not (self.reply_changed or self.error_replies or self.unanswered)
            and not self.anomalies
        )

    def latency_ms(self, pct: float) -> float:
        return percentile([s * 1000 for s in self.latencies], pct)


def check_session(report: Report, session_id: str, turns: list[Turn], stored: list[Any]) -> None:
    """Each sent message once, in send order, each followed by exactly its one reply."""
    users = [m for m in stored if m["role"] == "user"]
    replies = [m for m in stored if m["role"] == "assistant"]
    user_copies = Counter(m["id"] for m in users)
    reply_copies = Counter(m.get("reply_to") for m in replies)
    report.duplicated += sum(n - 1 for n in user_copies.values() if n > 1)
    report.duplicated += sum(n - 1 for n in reply_copies.values() if n > 1)
    message_of = {m["id"]: m for m in users}
    reply_of = {m.get("reply_to"): m for m in replies}
    expected: list[tuple[str, str | None]] = []
    for turn in turns:
        report.turns_sent += 1
        message = message_of.get(turn.message_id)
        reply = reply_of.get(turn.message_id)
        if turn.latency is None:
            report.unanswered += 1
        else:
            report.turns_answered += 1
            report.latencies.append(turn.latency)
        if turn.forgotten or (turn.acked and message is None):
            report.lost += 1
        if turn.replies and reply is None:
            report.lost += 1  # the client was given a reply that history does not hold
        if message is not None or turn.acked:
            expected.append(("user", turn.message_id))
        if reply is not None or turn.replies:
            expected.append(("assistant", turn.message_id))
        if message is not None and message["content"].split("]] ")[-1] != turn.text:
            report.wrong_content += 1
        if reply is None:
            continue
        if reply.get("error"):
            report.error_replies += 1
        elif reply["content"] != f"echo: {turn.text}":
            report.wrong_content += 1
        stored_reply = (reply["seq"], reply["content"])
        report.reply_changed += sum((g["seq"], g["content"]) != stored_reply for g in turn.replies)
    strangers = set(user_copies) - {t.message_id for t in turns}
    if strangers:
        report.anomalies.append(f"{session_id}: messages nobody sent: {sorted(strangers)}")
    actual = [
        (m["role"], m["id"] if m["role"] == "user" else m.get("reply_to"))
        for m in stored
        if m["role"] in ("user", "assistant")
    ]
    if actual != expected:
        report.out_of_order += 1
        report.anomalies.append(f"{session_id}: history {actual} is not {expected}")


async def temporal_view(address: str, session_ids: Sequence[str]) -> dict[str, int]:
    """How often the chaos hit a turn in flight, from the sessions' Temporal histories: model
    calls that needed more than one attempt, workflow tasks that timed out on a dead worker
    (START_TO_CLOSE: it died holding the task; SCHEDULE_TO_START: the task waited on a dead
    worker's sticky queue) or failed."""
    client = await Client.connect(address, namespace=NAMESPACE)
    view: Counter[str] = Counter()
    for session_id in session_ids:
        handle = client.get_workflow_handle(workflow_id(USER, session_id))
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                attempt = event.activity_task_started_event_attributes.attempt
                view["model calls retried"] += attempt > 1
            elif event.event_type in (_TIMED_OUT, _FAILED):
                view[f"workflow tasks {_event_detail(event).strip()}"] += 1
    return dict(view)


async def timeline(address: str, turn: Turn) -> list[str]:
    """The Temporal events of `turn`'s session while the turn was in flight, with seconds
    since its client first sent it: where the turn's time went."""
    client = await Client.connect(address, namespace=NAMESPACE)
    handle = client.get_workflow_handle(workflow_id(USER, turn.session))
    end = turn.sent_wall + (turn.latency or 0.0)
    lines: list[str] = []
    async for event in handle.fetch_history_events():
        at = event.event_time.ToMicroseconds() / 1e6
        if turn.sent_wall - 0.5 <= at <= end + 0.5:
            name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
            lines.append(f"{at - turn.sent_wall:+7.1f} s  {name}{_event_detail(event)}")
    return lines


_TIMED_OUT = EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
_FAILED = EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED


def _event_detail(event: HistoryEvent) -> str:
    if event.event_type == _TIMED_OUT:
        kind = event.workflow_task_timed_out_event_attributes.timeout_type
        return f" timed out ({TimeoutType.Name(kind).removeprefix('TIMEOUT_TYPE_')})"
    if event.event_type == _FAILED:
        cause = event.workflow_task_failed_event_attributes.cause
        name = WorkflowTaskFailedCause.Name(cause).removeprefix("WORKFLOW_TASK_FAILED_CAUSE_")
        return f" failed ({name})"
    if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
        started = event.activity_task_started_event_attributes
        if started.attempt > 1:
            return f" attempt {started.attempt} (before: {started.last_failure.message})"
    return ""


# ---- the run -------------------------------------------------------------------------------


async def chaos(cluster: Cluster, load: Load, opts: Options, stop: asyncio.Event) -> None:
    """Worker kills every few seconds, and each milestone once, until `stop`; then the actions
    in hand are finished (never a half-restarted server)."""
    rng = cluster.rng
    every = opts.kill_every
    next_kill = time.monotonic() + rng.uniform(*every) if every else math.inf
    milestones = sorted(opts.milestones)
    actions: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            for task in [t for t in actions if t.done()]:
                actions.discard(task)
                task.result()  # a process that would not start ends the run
            await cluster.supervise()
            # Milestones run beside the rest (a gateway's start must not hold up the next one).
            while milestones and load.progress() >= milestones[0][0]:
                actions.add(asyncio.create_task(cluster.act(milestones.pop(0)[1])))
            if time.monotonic() >= next_kill:
                await cluster.act(KILL_WORKER)
                assert every is not None
                next_kill = time.monotonic() + rng.uniform(*every)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
        await asyncio.gather(*actions)
    finally:
        for task in actions:
            task.cancel()


def new_cluster(opts: Options, workdir: Path) -> Cluster:
    return Cluster(
        workdir,
        workers=opts.workers,
        gateways=opts.gateways,
        reply_wait_seconds=opts.reply_wait_seconds,
        server_down=opts.server_down,
        seed=opts.seed,
    )


async def run_chaos(opts: Options, cluster: Cluster, say: Callable[[str], None] = print) -> Report:
    """One chaos run on `cluster` (not started yet; its SQLite file and every process's log go
    to its workdir). Every process it starts is stopped before this returns or raises."""
    load: Load | None = None
    try:
        say(
            f"starting a dev server, {opts.workers} workers, {opts.gateways} gateways "
            f"(seed {cluster.seed}, logs in {cluster.workdir})"
        )
        await cluster.start()
        load = Load(opts, cluster, cluster.rng)
        stop = asyncio.Event()
        chaos_task = asyncio.create_task(chaos(cluster, load, opts, stop))
        started = time.monotonic()
        say(f"{opts.sessions} sessions x {opts.turns} turns, with chaos")
        try:
            reporter = asyncio.create_task(_progress(load, cluster, say))
            try:
                await load.run()
            finally:
                reporter.cancel()
            seconds = time.monotonic() - started
            stop.set()  # the chaos task finishes its action in hand: no half-restarted server
            await chaos_task
        finally:
            if not chaos_task.done():
                chaos_task.cancel()
                with suppress(asyncio.CancelledError):
                    await chaos_task
        await cluster.supervise()
        say("reading every session's history back through the API")
        report = Report(opts.sessions, load.total, seconds=seconds, seed=cluster.seed)
        for session_id, turns in load.sessions.items():
            check_session(report, session_id, turns, await load.history(session_id))
        report.retried = dict(load.retried.most_common())
        report.doubled = load.doubled
        report.anomalies = load.anomalies + report.anomalies
        report.events = cluster.events
        report.done = dict(cluster.done)
        report.server_downtimes = cluster.server_downtimes
        report.missed = [a for _, a in opts.milestones if cluster.done[a] == 0]
        report.temporal = await temporal_view(cluster.address, list(load.sessions))
        answered = [t for turns in load.sessions.values() for t in turns if t.latency is not None]
        if answered:
            worst = max(answered, key=lambda t: t.latency or 0.0)
            report.worst = (
                f"{worst.session}/{worst.message_id}, sent at "
                f"{worst.sent_wall - cluster.t0_wall:.1f} s, answered {worst.latency:.1f} s later"
            )
            report.worst_timeline = await timeline(cluster.address, worst)
        return report
    finally:
        if load is not None:
            await load.aclose()
        await cluster.close()


async def _progress(load: Load, cluster: Cluster, say: Callable[[str], None]) -> None:
    while True:
        await asyncio.sleep(15)
        say(
            f"  {cluster.now():6.1f} s  {load.answered}/{load.total} turns answered, "
            f"{sum(load.retried.values())} requests retried"
        )


def print_report(report: Report, opts: Options) -> None:
    def seconds(ms: float) -> str:
        return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"

    kills = report.done.get(KILL_WORKER, 0)
    restarts = report.done.get(KILL_GATEWAY, 0) + report.done.get(TERM_GATEWAY, 0)
    downs = ", ".join(f"{d:.1f} s" for d in report.server_downtimes) or "-"
    print()
    print(
        f"chaos run: {opts.sessions} sessions x {opts.turns} turns, {opts.workers} workers, "
        f"{opts.gateways} gateways, {report.seconds:.0f} s (seed {report.seed})"
    )
    rows = [
        ("turns answered", f"{report.turns_answered} / {report.turns_planned}"),
        ("messages lost", str(report.lost)),
        ("messages duplicated", str(report.duplicated)),
        ("histories out of order", str(report.out_of_order)),
        ("wrong content / reply changed", f"{report.wrong_content} / {report.reply_changed}"),
        ("error replies / unanswered", f"{report.error_replies} / {report.unanswered}"),
        (
            "turn latency (client, retries incl.)",
            f"p50 {seconds(report.latency_ms(50))}, p99 {seconds(report.latency_ms(99))}, "
            f"worst {seconds(report.latency_ms(100))}",
        ),
        ("requests retried", ", ".join(f"{k} {v}" for k, v in report.retried.items()) or "none"),
        ("sent to both gateways at once", str(report.doubled)),
        ("in Temporal's histories", ", ".join(f"{k} {v}" for k, v in report.temporal.items())),
        (
            "chaos",
            f"{kills} workers kill -9'd and replaced, {restarts} gateway restarts, "
            f"{report.done.get(RESTART_SERVER, 0)} dev-server kill -9 + restart (down {downs})",
        ),
    ]
    for label, value in rows:
        print(f"  {label:40}{value}")
    print("  events:")
    for event in report.events:
        print(f"    {event.at:7.1f} s  {event.what}")
    if report.worst:
        print(f"  the slowest turn: {report.worst}; its session's events meanwhile:")
        for line in report.worst_timeline:
            print(f"    {line}")
    for line in report.anomalies[:30]:
        print(f"  ANOMALY {line}")
    if len(report.anomalies) > 30:
        print(f"  ... and {len(report.anomalies) - 30} more")
    if report.missed:
        print(f"  milestones that never happened: {', '.join(report.missed)}")
    print("PASS" if report.ok else "FAIL")


def parse_args(argv: Sequence[str] | None) -> tuple[Options, bool]:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the test suite's small run")
    parser.add_argument("--sessions", type=int, help="concurrent client sessions (default 60)")
    parser.add_argument("--turns", type=int, help="messages per session (default 20)")
    parser.add_argument("--seed", type=int, help="seed of the random choices")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs of a passing run")
    args = parser.parse_args(argv)
    opts = quick_options() if args.quick else Options()
    override(parser, args, opts, ("sessions", "turns"))
    opts.seed = args.seed
    return opts, args.keep_logs


def main(argv: Sequence[str] | None = None) -> int:
    opts, keep = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    passed = False
    cluster = new_cluster(opts, workdir)
    try:
        report = asyncio.run(run_chaos(opts, cluster))
        print_report(report, opts)
        passed = report.ok
    finally:
        cluster.kill_all()  # after Ctrl-C, say
        if not passed or keep:
            kept = RESULTS / f"chaos-logs-{time.strftime('%Y%m%d-%H%M%S')}"
            kept.mkdir(parents=True, exist_ok=True)
            for log in workdir.glob("*.log"):
                shutil.copy(log, kept / log.name)
            print(f"process logs kept in {kept.relative_to(ROOT)}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
