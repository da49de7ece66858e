"""Metrics and logs through real worker and gateway processes on the dev server.

A turn moves the worker's counters (ours and the Temporal SDK's, on one Prometheus endpoint)
and the gateway's by exactly what it did; failed model calls count by error class; neither
endpoint names a session, user or message; the JSON log lines of a turn carry its session id
and turn, and hold the message text only at DEBUG. Temporal failures are counted as the HTTP
status they became (in-process: a real Temporal server will not rate-limit on request).
"""

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from api.errors import install_error_handlers
from api.metrics import install as install_metrics
from tests.conftest import scripted_settings
from tests.processes import (
    ALICE_KEY,
    Gateway,
    Process,
    free_port,
    new_session,
    running,
    stack_env,
    start,
    start_gateway,
)

_SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>(?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?'
    r" (?P<value>\S+)(?: \d+)?$"
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in a Prometheus text exposition, named as
    exposed (a parser library would add `_total` to the SDK's counters)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        labels = dict(_LABEL.findall(match["labels"] or ""))
        out.append((match["name"], labels, float(match["value"])))
    return out


def total(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        value
        for sample, have, value in samples(text)
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def wait_for_endpoint(url: str, process: Process, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.proc.poll() is None, "the worker exited"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {seconds} s")


class Stack:
    def __init__(self, gateway: Gateway, worker_metrics: str, logs: list[Path]) -> None:
        self.gateway = gateway
        self.worker_metrics = worker_metrics
        self.gateway_metrics = f"{gateway.url}/metrics"
        self.logs = logs

    def log_text(self) -> str:
        return "".join(path.read_text() for path in self.logs)

    def log_lines(self) -> list[dict[str, Any]]:
        # Every line is JSON: the SDK core's and uvicorn's go through the same formatter.
        return [json.loads(line) for line in self.log_text().splitlines() if line.strip()]


@contextmanager
def stack(dev_env: WorkflowEnvironment, tmp: Path, level: str) -> Iterator[Stack]:
    port = free_port()
    environ = stack_env(
        dev_env,
        f"tq-metrics-{uuid.uuid4().hex[:8]}",
        worker_metrics_port=port,
        log_format="json",
        log_level=level,
        active_sessions_refresh_seconds=1,
    )
    logs = [tmp / f"worker-{level}.log", tmp / f"gateway-{level}.log"]
    worker = start("worker", environ, logs[0])
    gateway = start_gateway(environ, logs[1])
    with running(gateway.process, worker):
        worker_metrics = f"http://127.0.0.1:{port}/metrics"
        wait_for_endpoint(worker_metrics, worker)
        yield Stack(gateway, worker_metrics, logs)


@pytest.fixture(scope="module")
def info_stack(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with stack(dev_env, tmp_path_factory.mktemp("metrics"), "INFO") as running_stack:
        yield running_stack


async def one_turn(gateway: Gateway, text: str) -> tuple[str, dict[str, Any]]:
    async with httpx.AsyncClient(
        base_url=gateway.url, headers={"Authorization": f"Bearer {ALICE_KEY}"}, timeout=60
    ) as alice:
        session_id = await new_session(alice)
        response = await alice.post(
            f"/v1/sessions/{session_id}/messages", json={"content": text, "message_id": "m-1"}
        )
        assert response.status_code == 200, response.text
        reply: dict[str, Any] = response.json()["reply"]
        return session_id, reply


async def test_a_turn_moves_the_worker_and_gateway_counters(info_stack: Stack) -> None:
    worker_before = await scrape(info_stack.worker_metrics)
    gateway_before = await scrape(info_stack.gateway_metrics)

    session_id, reply = await one_turn(info_stack.gateway, "count this turn " + uuid.uuid4().hex)
    usage = reply["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0

    # The worker: ours, recorded live (after the reply, the SDK has flushed the activation).
    deadline = time.monotonic() + 10
    while True:
        worker_after = await scrape(info_stack.worker_metrics)
        moved = total(worker_after, "chat_turns") - total(worker_before, "chat_turns")
        if moved >= 1 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)

    def delta(name: str, **labels: str) -> float:
        return total(worker_after, name, **labels) - total(worker_before, name, **labels)

    assert delta("chat_turns", outcome="ok", provider="scripted") == 1
    assert delta("chat_turns") == 1
    assert delta("chat_turn_latency_count", outcome="ok") == 1
    assert delta("chat_turn_latency_sum", outcome="ok") > 0
    assert delta("chat_tokens", kind="prompt") == usage["prompt_tokens"]
    assert delta("chat_tokens", kind="completion") == usage["completion_tokens"]
    assert delta("chat_model_errors") == 0
    # The Temporal SDK's own metrics, on the same endpoint: the model call and workflow tasks.
    assert delta("temporal_activity_execution_latency_count", activity_type="generate_reply") == 1
    assert delta("temporal_workflow_task_execution_latency_count") >= 1
    assert delta("temporal_request", operation="RespondActivityTaskCompleted") >= 1
    assert "temporal_sticky_cache_size" in worker_after

    # The gateway: the two requests by their route templates, never the paths sent.
    gateway_after = await scrape(info_stack.gateway_metrics)

    def gateway_delta(name: str, **labels: str) -> float:
        return total(gateway_after, name, **labels) - total(gateway_before, name, **labels)

    created = {"route": "/v1/sessions", "method": "POST", "status": "2xx"}
    assert gateway_delta("chat_http_requests_total", **created) == 1
    sent = {"route": "/v1/sessions/{session_id}/messages", "method": "POST", "status": "2xx"}
    assert gateway_delta("chat_http_requests_total", **sent) == 1
    assert gateway_delta("chat_http_request_duration_seconds_count", route=sent["route"]) == 1
    assert session_id not in gateway_after and session_id not in worker_after
    # Running sessions, from visibility: counted at most every second here, so a scrape
    # within a second of the last shows the last count.
    deadline = time.monotonic() + 10
    while total(gateway_after, "chat_active_sessions") < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        gateway_after = await scrape(info_stack.gateway_metrics)
    assert total(gateway_after, "chat_active_sessions") >= 1
    assert total(gateway_after, "chat_active_sessions_count_failures_total") == 0
    assert "process_cpu_seconds_total" in gateway_after


async def test_failed_model_calls_count_by_error_class(info_stack: Stack) -> None:
    """A 503 retried into a good reply, then a 400 that ends the turn with an error."""
    before = await scrape(info_stack.worker_metrics)
    _, retried = await one_turn(info_stack.gateway, "[[fail_once=503]] then fine")
    assert retried["error"] is None and retried["attempt"] == 2
    _, failed = await one_turn(info_stack.gateway, "[[fail=400]] never fine")
    assert failed["error"] is not None
    after = await scrape(info_stack.worker_metrics)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("chat_model_errors", error_type="server_error", provider="scripted") == 1
    assert delta("chat_model_errors", error_type="client_error", provider="scripted") == 1
    assert delta("chat_model_errors") == 2
    assert delta("chat_turns", outcome="ok") == 1
    assert delta("chat_turns", outcome="error") == 1
    assert delta("chat_turn_latency_count", outcome="error") == 1
    logged = [line for line in info_stack.log_lines() if line["message"] == "model call failed"]
    assert {line["error_type"] for line in logged} >= {"server_error", "client_error"}


async def test_unknown_paths_and_errors_keep_labels_bounded(info_stack: Stack) -> None:
    gateway = info_stack.gateway
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as anonymous:
        for n in range(3):
            assert (await anonymous.get(f"/no/such/path-{n}")).status_code == 404
        assert (await anonymous.get("/v1/sessions")).status_code == 401
    text = await scrape(info_stack.gateway_metrics)
    assert total(text, "chat_http_requests_total", route="unmatched", status="4xx") >= 3
    assert total(text, "chat_http_requests_total", route="/v1/sessions", status="4xx") >= 1
    assert "path-0" not in text
    routes = {labels["route"] for name, labels, _ in samples(text) if "route" in labels}
    assert all(route == "unmatched" or route.startswith("/") for route in routes)


async def test_metrics_name_no_session_user_or_message(info_stack: Stack) -> None:
    """Both endpoints are unauthenticated: after a turn, no label value and no line holds the
    session id, the user, the message id or the text."""
    text = "a secret plan " + uuid.uuid4().hex
    session_id, reply = await one_turn(info_stack.gateway, text)
    for url in (info_stack.worker_metrics, info_stack.gateway_metrics):
        scraped = await scrape(url)
        for needle in (session_id, "alice", ALICE_KEY, "m-1", text, reply["content"]):
            assert needle not in scraped, (url, needle)
        labels = {k for _, have, _ in samples(scraped) for k in have}
        assert not labels & {"session_id", "user", "owner", "workflow_id", "message_id"}, labels


async def test_json_logs_of_a_turn_carry_ids_but_not_the_text_at_info(info_stack: Stack) -> None:
    text = "do not log this " + uuid.uuid4().hex
    session_id, reply = await one_turn(info_stack.gateway, text)
    lines = await _lines_of(info_stack, session_id, "model call finished")
    assert {"ts", "level", "logger", "message"} <= set(lines[0])
    started = [line for line in lines if line["message"] == "model call started"]
    assert started and started[0]["turn"] == 1 and started[0]["workflow_id"].endswith(session_id)
    finished = [line for line in lines if line["message"] == "model call finished"]
    assert finished[0]["completion_tokens"] == reply["usage"]["completion_tokens"]
    gateway = [line for line in lines if line["logger"] == "api.service"]
    assert {line["message_id"] for line in gateway} == {"m-1"}
    assert any(line.get("turn") == 1 for line in gateway)
    everything = info_stack.log_text()
    assert text not in everything and reply["content"] not in everything
    assert all(line["level"] != "DEBUG" for line in info_stack.log_lines())


async def test_json_logs_hold_the_text_at_debug(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A turn at CHAT_LOG_LEVEL=DEBUG: the message and the reply are logged."""
    with stack(dev_env, tmp_path, "DEBUG") as debug:
        text = "log this one " + uuid.uuid4().hex
        session_id, reply = await one_turn(debug.gateway, text)
        lines = await _lines_of(debug, session_id, "model reply")
        texts = {line.get("text") for line in lines if line["level"] == "DEBUG"}
        assert text in texts and reply["content"] in texts


async def _lines_of(stack: Stack, session_id: str, last: str) -> list[dict[str, Any]]:
    """The log lines naming `session_id`, once the line `last` has been written."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in stack.log_lines() if line.get("session_id") == session_id]
        if any(line["message"] == last for line in lines) or time.monotonic() > deadline:
            return lines
        await asyncio.sleep(0.1)


async def test_temporal_failures_are_counted_as_the_status_they_became() -> None:
    """The error handlers (api/errors.py) count what Temporal refused, by gRPC status."""
    app = FastAPI()
    install_error_handlers(app)
    metrics = install_metrics(app, scripted_settings("unused"))
    assert metrics is not None
    app.state.metrics = metrics
    statuses = {
        "busy": RPCStatusCode.RESOURCE_EXHAUSTED,
        "down": RPCStatusCode.UNAVAILABLE,
        "late": RPCStatusCode.DEADLINE_EXCEEDED,
    }

    @app.get("/fails/{how}")
    async def fails(how: str) -> None:
        raise RPCError("refused", statuses[how], b"")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        answered = [(await client.get(f"/fails/{how}")).status_code for how in statuses]
        assert answered == [429, 503, 503]
        text = (await client.get("/metrics")).text
    assert total(text, "chat_temporal_errors_total", grpc_status="RESOURCE_EXHAUSTED") == 1
    assert total(text, "chat_temporal_errors_total", http_status="503") == 2
    assert total(text, "chat_http_requests_total", route="/fails/{how}", status="4xx") == 1
    assert total(text, "chat_http_requests_total", route="/fails/{how}", status="5xx") == 2
