"""After a full scenario, no secret appears anywhere it could leak.

Secrets: the users' API keys, the provider key, the encryption key and the stream token.
Places: every payload of every workflow history (decrypted), the worker's and gateway's logs
, every HTTP response body the scenario received, and the OpenAPI document.
The provider is hostile on purpose: it echoes the key it was sent in its error message.
"""

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from activities.providers.scripted import tool_script
from cli.sse import aiter_events
from common.encryption import EncryptionCodec, new_key, parse_key
from tests.payloads import payloads_in
from tests.processes import (
    ALICE_KEY,
    BOB_KEY,
    running,
    stack_env,
    start,
    start_gateway,
)

PROVIDER_KEY = "sk-provider-" + uuid.uuid4().hex
STREAM_TOKEN = "stream-" + uuid.uuid4().hex
ENCRYPTION_KEY = new_key()


class EchoingProvider(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that refuses every request, quoting the key it got."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps(
            {"error": {"message": f"invalid key {self.headers.get('Authorization')}"}}
        )
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def provider_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingProvider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


async def test_no_secret_leaks_after_a_full_scenario(
    dev_env: WorkflowEnvironment, provider_url: str, tmp_path: Path
) -> None:
    secrets = {
        "alice's API key": ALICE_KEY,
        "bob's API key": BOB_KEY,
        "provider key": PROVIDER_KEY,
        "encryption key": ENCRYPTION_KEY,
        "stream token": STREAM_TOKEN,
    }
    environ = stack_env(
        dev_env,
        f"tq-secrets-{uuid.uuid4().hex[:8]}",
        openai_base_url=provider_url,
        openai_api_key=PROVIDER_KEY,
        encryption_keys={"k1": ENCRYPTION_KEY},
        stream_token=STREAM_TOKEN,
    )
    log = tmp_path / "processes.log"
    bodies: list[str] = []
    worker = start("worker", environ, log)
    gateway = start_gateway(environ, log)
    with running(gateway.process, worker):
        alice = gateway.client()

        async def call(method: str, url: str, **kwargs: object) -> httpx.Response:
            response = await alice.request(method, url, **kwargs)  # type: ignore[arg-type]
            bodies.append(response.text)
            return response

        created = await call("POST", "/v1/sessions", json={"model": "openai/gpt-test"})
        refused = created.json()["session_id"]
        failed = await call("POST", f"/v1/sessions/{refused}/messages", json={"content": "hi"})
        assert "invalid key" in failed.json()["reply"]["error"], failed.text

        created = await call("POST", "/v1/sessions", json={"tools": ["calculate"]})
        session_id = created.json()["session_id"]
        content = "sum " + tool_script([("calculate", {"expression": "1+2"})])
        url = f"/v1/sessions/{session_id}/messages/stream"
        async with alice.stream("POST", url, json={"content": content}) as response:
            async for sse in aiter_events(response.aiter_lines()):
                bodies.append(json.dumps(sse.data))
        await call("GET", f"/v1/sessions/{session_id}/messages")
        await call("GET", f"/v1/sessions/{session_id}")
        await call("GET", "/v1/sessions")
        await call("POST", f"/v1/sessions/{session_id}/messages", json={"content": "x" * 99_999})
        await call("GET", "/v1/sessions/nope/messages/also-nope")
        await call("GET", "/openapi.json")
        wrong_key = httpx.AsyncClient(
            base_url=gateway.url, headers={"Authorization": f"Bearer {ALICE_KEY}x"}
        )
        async with wrong_key:
            bodies.append((await wrong_key.get("/v1/sessions")).text)
        await gateway.close_clients()

    codec = EncryptionCodec({"k1": parse_key("k1", ENCRYPTION_KEY)}, "k1")
    stored: list[bytes] = []
    async for run in dev_env.client.list_workflows(f'TaskQueue = "{environ["CHAT_TASK_QUEUE"]}"'):
        history = await dev_env.client.get_workflow_handle(
            run.id, run_id=run.run_id
        ).fetch_history()
        for event in history.events:
            stored.append(event.SerializeToString())
            stored += [codec.open(p).SerializeToString() for p in payloads_in(event)]
    assert len(stored) > 20, "the scenario wrote histories"
    assert any(b"1+2" in blob for blob in stored), "payloads were decrypted and scanned"

    places = {
        "workflow history": b"\n".join(stored).decode(errors="replace"),
        "logs": log.read_text(errors="replace"),
        "HTTP responses": "\n".join(bodies),
    }
    leaks = [
        f"{name} in {place}"
        for place, text in places.items()
        for name, secret in secrets.items()
        if secret in text
    ]
    assert not leaks, leaks
