"""Real worker and gateway processes for tests that need them, and the HTTP calls they share."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from temporalio.testing import WorkflowEnvironment

ALICE_KEY = "test-key-alice"
BOB_KEY = "test-key-bob"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stack_env(env: WorkflowEnvironment, task_queue: str, **settings: object) -> dict[str, str]:
    """Process environment for a worker or gateway talking to `env` on `task_queue`."""
    values: dict[str, object] = {
        "temporal_address": env.client.service_client.config.target_host,
        "task_queue": task_queue,
        "scripted_provider_enabled": True,
        "default_model": "scripted/echo",
        "api_keys": {ALICE_KEY: "alice", BOB_KEY: "bob"},
        **settings,
    }
    out = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    for key, value in values.items():
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        out[f"CHAT_{key.upper()}"] = text
    return out


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    name: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill_hard(self) -> None:
        """kill -9: no draining, no goodbyes, like a pod that vanished."""
        self.proc.kill()
        self.proc.wait()


def start(module: str, environ: dict[str, str], log: Path | None = None) -> Process:
    """`python -m module`; its output goes to `log` when given (to be read by the test)."""
    if log is None:
        return Process(subprocess.Popen([sys.executable, "-m", module], env=environ), module)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", module], env=environ, stdout=out, stderr=subprocess.STDOUT
        )
    return Process(proc, module)


@dataclass
class Gateway:
    process: Process
    url: str
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, key: str | None = ALICE_KEY, timeout: float = 60) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)
        self.clients.append(client)
        return client

    async def close_clients(self) -> None:
        for client in self.clients:
            await client.aclose()


async def poll_reply(client: httpx.AsyncClient, url: str, seconds: float = 20) -> Any:
    """GET a reply URL until it answers 200. 202 means not yet; 503 means no worker is up to
    answer the query (as during a crash test); anything else fails the test."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        response = await client.get(url)
        if response.status_code == 200:
            return response.json()
        assert response.status_code in (202, 503), response.text
        await asyncio.sleep(0.1)
    raise AssertionError(f"no reply within {seconds} s")


async def new_session(client: httpx.AsyncClient, **body: Any) -> str:
    response = await client.post("/v1/sessions", json=body)
    assert response.status_code == 201, response.text
    session_id: str = response.json()["session_id"]
    return session_id


async def messages(client: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/sessions/{session_id}/messages", params={"limit": 500})
    assert response.status_code == 200, response.text
    page: list[dict[str, Any]] = response.json()["messages"]
    return page


def start_gateway(environ: dict[str, str], log: Path | None = None) -> Gateway:
    port = free_port()
    environ = {**environ, "CHAT_GATEWAY_PORT": str(port)}
    process = start("api", environ, log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError("gateway exited during start")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Gateway(process, url)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.stop()
    raise RuntimeError("gateway did not start within 30 s")


@contextmanager
def running(*processes: Process) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.stop()


@contextmanager
def stopping(processes: list[Process]) -> Iterator[None]:
    """Stops whatever the block appends to `processes`, however the block ends."""
    try:
        yield
    finally:
        for process in processes:
            process.stop()


@contextmanager
def serving(environ: dict[str, str]) -> Iterator[Gateway]:
    """A worker process and a gateway process on `environ`, stopped when the block ends."""
    worker = start("worker", environ)
    gateway = start_gateway(environ)
    with running(gateway.process, worker):
        yield gateway
