"""The real SmolLM2 model end to end: in-process llama.cpp, and over HTTP as an OpenAI peer."""

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from cli.sse import aiter_events
from tests.processes import Gateway, messages, serving, stack_env

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def model_gateway(dev_env: WorkflowEnvironment, llama_server: str) -> Iterator[Gateway]:
    """A worker that can reach both the in-process model and the llama.cpp HTTP server."""
    environ = stack_env(
        dev_env,
        f"tq-model-{uuid.uuid4().hex[:8]}",
        default_model="local/smollm2",
        scripted_provider_enabled=False,
        openai_base_url=llama_server,
        max_output_tokens=48,
    )
    with serving(environ) as gateway:
        yield gateway


async def chat(gateway: Gateway, model: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    client = gateway.client(timeout=120)
    body = {"system_prompt": "You are a helpful assistant. Answer in one sentence."}
    if model:
        body["model"] = model
    created = await client.post("/v1/sessions", json=body)
    assert created.status_code == 201, created.text
    session_id = created.json()["session_id"]
    answer = await client.post(
        f"/v1/sessions/{session_id}/messages", json={"content": "What is the capital of France?"}
    )
    assert answer.status_code == 200, answer.text
    status = await client.get(f"/v1/sessions/{session_id}")
    await client.aclose()
    return answer.json()["reply"], status.json()


@pytest.mark.parametrize("model", [None, "openai/smollm2"], ids=["local-default", "openai-http"])
async def test_a_real_model_answers(model_gateway: Gateway, model: str | None) -> None:
    reply, status = await chat(model_gateway, model)
    assert reply["error"] is None
    assert reply["content"].strip(), "the model produced no text"
    assert reply["model"] == (model or "local/smollm2")
    assert reply["usage"]["prompt_tokens"] > 10  # the system prompt and question, tokenized
    assert reply["usage"]["completion_tokens"] > 0
    assert status["usage"]["total_tokens"] == reply["usage"]["total_tokens"]


@pytest.mark.parametrize("model", [None, "openai/smollm2"], ids=["local-default", "openai-http"])
async def test_a_real_model_streams_token_by_token(
    model_gateway: Gateway, model: str | None
) -> None:
    client = model_gateway.client(timeout=120)
    created = await client.post("/v1/sessions", json={"model": model} if model else {})
    session_id = created.json()["session_id"]
    texts: list[str] = []
    body = {"message_id": "q1", "content": "Tell me about the sea."}
    async with client.stream("POST", f"/v1/sessions/{session_id}/messages/stream", json=body) as r:
        assert r.status_code == 200
        async for event in aiter_events(r.aiter_lines()):
            if event.event == "delta":
                texts.append(event.data["text"])
            if event.event == "turn_completed":
                break
    (reply,) = [m for m in await messages(client, session_id) if m["role"] == "assistant"]
    await client.aclose()
    assert len(texts) > 1, "the reply arrived in pieces, as the model wrote it"
    assert "".join(texts) == reply["content"] and reply["content"].strip()
