"""The OpenAI-compatible endpoint, driven by the official `openai` package, unchanged, against
real gateway and worker processes on the dev server (scripted provider: `echo: <message>`).

First the chunk translation on its own (what a retried model call does to a stream), then the
package against the gateway: replies and streams equal to what the session stored, context
kept across calls, session naming, idempotency, errors as the package's exceptions, and two
users with the same session id.
"""

import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from schemathesis.checks import CheckFunction
from schemathesis.specs.openapi.checks import negative_data_rejection
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.providers.scripted import tool_script
from api.app import create_app
from api.openai_endpoint import ChunkStream
from api.streaming import Cursor, StreamEvent
from common.ids import quota_workflow_id
from tests.conftest import scripted_settings
from tests.processes import (
    ALICE_KEY,
    BOB_KEY,
    Gateway,
    Process,
    messages,
    new_session,
    running,
    stack_env,
    start,
    start_gateway,
    stopping,
)

MAX_CHARS = 2000
WAIT_LIMIT = 1  # the gateway's reply_wait_seconds: a slower reply is still answered here
WORDS = " ".join(f"word{i}" for i in range(30))


# ---- chunks from turn events, no processes ----------------------------------------------------


def event(kind: str, **data: Any) -> StreamEvent:
    return StreamEvent(Cursor(1), kind, data)


def translate(events: list[StreamEvent]) -> tuple[str, list[dict[str, Any] | str]]:
    """The text a client shows, and everything the stream sent."""
    chunks = ChunkStream("chatcmpl-m1", 0, "scripted/echo", False, "/v1/sessions/s/messages/m1")
    sent: list[dict[str, Any] | str] = []
    for item in events:
        sent += chunks.feed(item)
        if chunks.finished:
            break
    text = "".join(
        p["choices"][0]["delta"].get("content", "")
        for p in sent
        if isinstance(p, dict) and p.get("choices")
    )
    return text, sent


def test_a_retry_that_rewrites_the_same_text_continues_where_the_client_is() -> None:
    text, sent = translate(
        [
            event("turn_started", turn=1, message_id="m1"),
            event("delta", step=1, attempt=1, text="echo: one "),
            event("delta", step=1, attempt=1, text="two "),
            event("restart", step=1, attempt=2),
            event("delta", step=1, attempt=2, text="echo: "),  # held: the client has it
            event("delta", step=1, attempt=2, text="one two three"),
            event("turn_completed", message_id="m1.reply", model="scripted/echo", error=None),
        ]
    )
    assert text == "echo: one two three"
    contents = [p["choices"][0]["delta"].get("content") for p in sent if isinstance(p, dict)]
    assert contents == ["echo: one ", "two ", "three", None]
    assert sent[-2]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert sent[-1] == "[DONE]"


def test_a_retry_that_writes_different_text_ends_the_stream_with_an_error() -> None:
    text, sent = translate(
        [
            event("delta", step=1, attempt=1, text="echo: one two "),
            event("restart", step=1, attempt=2),
            event("delta", step=1, attempt=2, text="echo: uno"),
            event("delta", step=1, attempt=2, text=" dos tres"),
            event("turn_completed", message_id="m1.reply", model="scripted/echo", error=None),
        ]
    )
    assert text == "echo: one two "
    error = sent[-1]
    assert isinstance(error, dict) and error["error"]["code"] == "reply_restarted"
    assert "/v1/sessions/s/messages/m1" in error["error"]["message"]
    assert "[DONE]" not in sent


def test_a_retry_that_ends_shorter_than_what_was_shown_is_an_error() -> None:
    _, sent = translate(
        [
            event("delta", step=1, attempt=1, text="echo: one two"),
            event("restart", step=1, attempt=2),
            event("delta", step=1, attempt=2, text="echo: one"),
            event("turn_completed", message_id="m1.reply", model="scripted/echo", error=None),
        ]
    )
    assert isinstance(sent[-1], dict) and sent[-1]["error"]["code"] == "reply_restarted"


def test_a_failed_turn_is_an_error_event() -> None:
    _, sent = translate(
        [
            event("error", status=502, detail="the model failed: 503"),
            event("turn_completed", message_id="m1.reply", model="scripted/echo", error="x"),
        ]
    )
    assert sent == [
        {
            "error": {
                "message": "the model failed: 503",
                "type": "server_error",
                "param": None,
                "code": "model_error",
            }
        }
    ]


# ---- the openai package against the gateway ---------------------------------------------------


ALICE, BOB = "alice-oai", "bob-oai"


@pytest.fixture(scope="module")
def environ(dev_env: WorkflowEnvironment) -> dict[str, str]:
    return stack_env(
        dev_env,
        f"tq-oai-{uuid.uuid4().hex[:8]}",
        max_message_chars=MAX_CHARS,
        max_request_bytes=16_384,
        reply_wait_seconds=WAIT_LIMIT,
        # Users of their own: the dev server is shared, and test_fuzz_api leaves closed runs
        # of fuzzed ids ("0"...) under alice on a task queue nobody polls any more; a message
        # here to the same id would resume that session and wait on replaying them.
        api_keys={ALICE_KEY: ALICE, BOB_KEY: BOB},
    )


@pytest.fixture(scope="module")
async def gateway(environ: dict[str, str]) -> AsyncIterator[Gateway]:
    worker = start("worker", environ)
    gw = start_gateway(environ)
    with running(gw.process, worker):
        yield gw
        await gw.close_clients()


def sdk(
    gateway: Gateway, session_id: str | None = None, key: str = ALICE_KEY, **options: Any
) -> AsyncOpenAI:
    headers = {"X-Session-Id": session_id} if session_id else None
    return AsyncOpenAI(
        base_url=f"{gateway.url}/v1", api_key=key, default_headers=headers, **options
    )


def new_id() -> str:
    return f"oai-{uuid.uuid4().hex[:10]}"


async def test_a_reply_is_what_the_session_stored(
    gateway: Gateway, alice: httpx.AsyncClient
) -> None:
    session_id = new_id()
    client = sdk(gateway, session_id)
    raw = await client.chat.completions.with_raw_response.create(
        model="scripted/echo",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello there"},
        ],
    )
    reply = raw.parse()
    message_id = raw.headers["x-message-id"]
    assert raw.headers["x-session-id"] == session_id
    assert reply.object == "chat.completion" and reply.id == f"chatcmpl-{message_id}"
    assert reply.model == "scripted/echo"
    (choice,) = reply.choices
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    history = await messages(alice, session_id)
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[0]["id"] == message_id and history[0]["content"] == "hello there"
    assert choice.message.content == history[1]["content"] == "echo: hello there"
    assert reply.usage is not None
    assert reply.usage.model_dump(exclude_none=True) == history[1]["usage"]
    status = (await alice.get(f"/v1/sessions/{session_id}")).json()
    assert (status["system_prompt"], status["model"]) == ("You are terse.", "scripted/echo")


async def test_the_session_keeps_the_conversation(
    gateway: Gateway, alice: httpx.AsyncClient
) -> None:
    session_id = new_id()
    client = sdk(gateway, session_id)
    first = await client.chat.completions.create(
        model="scripted/echo", messages=[{"role": "user", "content": "my name is Ada"}]
    )
    # Only the new message; the model and system prompt of a session are set once.
    second = await client.chat.completions.create(
        model="ignored/for-an-existing-session",
        messages=[
            {"role": "system", "content": "ignored too"},
            {"role": "user", "content": "what is my name?"},
        ],
    )
    assert second.choices[0].message.content == "echo: what is my name?"
    assert second.model == "scripted/echo"
    history = await messages(alice, session_id)
    assert [m["content"] for m in history] == [
        "my name is Ada",
        "echo: my name is Ada",
        "what is my name?",
        "echo: what is my name?",
    ]
    # The model saw the first turn: the scripted provider counts every word of its context.
    assert first.usage and second.usage
    assert (first.usage.prompt_tokens, second.usage.prompt_tokens) == (4, 4 + 5 + 4)
    # A client that resends the whole conversation gets the same: only the last one is new.
    third = await client.chat.completions.create(
        model="scripted/echo",
        messages=[
            {"role": "user", "content": "my name is Ada"},
            {"role": "assistant", "content": "echo: my name is Ada"},
            {"role": "user", "content": [{"type": "text", "text": "and again"}]},
        ],
    )
    assert third.choices[0].message.content == "echo: and again"
    assert len(await messages(alice, session_id)) == 6
    assert (await alice.get(f"/v1/sessions/{session_id}")).json()["system_prompt"] is None


async def test_streamed_chunks_are_exactly_the_stored_reply(
    gateway: Gateway, alice: httpx.AsyncClient
) -> None:
    session_id = new_id()
    client = sdk(gateway, session_id)
    stream = await client.chat.completions.create(
        model="scripted/echo",
        messages=[{"role": "user", "content": "[[tok_delay=0.01]]" + WORDS}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks[1:] if c.choices]
    assert len(content) > 20, "the reply arrives a word at a time"
    *_, finish, usage = chunks
    assert finish.choices[0].finish_reason == "stop" and not finish.choices[0].delta.content
    assert [c.choices[0].finish_reason for c in chunks[:-2]] == [None] * (len(chunks) - 2)
    assert usage.choices == [] and usage.usage is not None
    history = await messages(alice, session_id)
    assert "".join(filter(None, content)) == history[1]["content"] == "echo: " + WORDS
    assert usage.usage.model_dump(exclude_none=True) == history[1]["usage"]
    assert all(c.usage is None for c in chunks[:-1])


async def test_a_tool_turn_streams_only_the_reply(
    gateway: Gateway, alice: httpx.AsyncClient
) -> None:
    """The session's own tools run inside the turn; the client sees the reply's text."""
    session_id = await new_session(alice, tools=["calculate"])
    client = sdk(gateway, session_id)
    stream = await client.chat.completions.create(
        model="scripted/echo",
        messages=[{"role": "user", "content": tool_script([("calculate", {"expression": "6*7"})])}],
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    history = await messages(alice, session_id)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    assert text == history[-1]["content"] and "42" in text


async def test_the_user_field_names_the_session_where_headers_cannot_be_set(
    gateway: Gateway, alice: httpx.AsyncClient
) -> None:
    session_id = new_id()
    no_headers = sdk(gateway)
    reply = await no_headers.chat.completions.create(
        model="scripted/echo", messages=[{"role": "user", "content": "by user"}], user=session_id
    )
    assert reply.choices[0].message.content == "echo: by user"
    # The header names the same session, and takes precedence over `user`.
    await sdk(gateway, session_id).chat.completions.create(
        model="scripted/echo", messages=[{"role": "user", "content": "by header"}], user="other"
    )
    history = await messages(alice, session_id)
    assert [m["content"] for m in history if m["role"] == "user"] == ["by user", "by header"]
    assert (await alice.get("/v1/sessions/other")).status_code == 404


async def test_an_idempotency_key_makes_a_resend_return_the_stored_reply(
    gateway: Gateway, alice: httpx.AsyncClient
) -> None:
    session_id = new_id()
    client = sdk(gateway, session_id)
    body: dict[str, Any] = {
        "model": "scripted/echo",
        "messages": [{"role": "user", "content": "only once"}],
        "extra_headers": {"Idempotency-Key": "m-1"},
    }
    first = await client.chat.completions.create(**body)
    again = await client.chat.completions.create(**body)
    assert again.id == first.id == "chatcmpl-m-1"
    assert again.choices[0].message.content == first.choices[0].message.content
    streamed = await client.chat.completions.create(**body, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in streamed if c.choices])
    assert text == "echo: only once"
    history = await messages(alice, session_id)
    assert [m["id"] for m in history] == ["m-1", "m-1.reply"]


async def test_a_reply_slower_than_the_gateway_wait_limit_is_still_answered(
    gateway: Gateway,
) -> None:
    reply = await sdk(gateway, new_id()).chat.completions.create(
        model="scripted/echo",
        messages=[{"role": "user", "content": f"[[delay={WAIT_LIMIT + 1}]]slow"}],
    )
    assert reply.choices[0].message.content == "echo: slow"


async def test_a_failed_model_call_is_an_error_and_not_retried(
    gateway: Gateway, alice: httpx.AsyncClient
) -> None:
    session_id = new_id()
    client = sdk(gateway, session_id)  # with the package's default retries
    with pytest.raises(openai.InternalServerError) as failed:
        await client.chat.completions.create(
            model="scripted/echo", messages=[{"role": "user", "content": "[[fail=400]]no"}]
        )
    assert failed.value.status_code == 502 and failed.value.code == "model_error"
    assert failed.value.response.headers["x-should-retry"] == "false"
    stream = await client.chat.completions.create(
        model="scripted/echo",
        messages=[{"role": "user", "content": "[[fail=400]]again"}],
        stream=True,
    )
    with pytest.raises(openai.APIError) as broke:
        _ = [chunk async for chunk in stream]
    assert broke.value.message in failed.value.message
    history = await messages(alice, session_id)
    assert [m["role"] for m in history] == ["user", "assistant"] * 2, "no retried turns"
    assert history[1]["error"] and history[1]["error"] in failed.value.message


async def test_errors_are_the_packages_exceptions_in_openai_shape(
    gateway: Gateway, alice: httpx.AsyncClient
) -> None:
    session_id = new_id()
    hello: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
    client = sdk(gateway, session_id)

    async def refused(error: type[openai.APIStatusError], **body: Any) -> openai.APIStatusError:
        with pytest.raises(error) as caught:
            await client.chat.completions.create(**{"model": "scripted/echo", **body})
        return caught.value

    wrong_key = sdk(gateway, session_id, key="wrong-key")
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        await wrong_key.chat.completions.create(model="scripted/echo", messages=hello)
    assert unauthorized.value.code == "invalid_api_key"
    assert "unknown API key" in unauthorized.value.message
    with pytest.raises(openai.BadRequestError) as unnamed:
        await sdk(gateway).chat.completions.create(model="scripted/echo", messages=hello)
    assert unnamed.value.param == "X-Session-Id" and "X-Session-Id" in unnamed.value.message

    error = await refused(openai.UnprocessableEntityError, model="gpt-4o", messages=hello)
    assert error.code == "model_not_found" and error.param == "model"
    assert "GET /v1/models" in error.message
    error = await refused(
        openai.BadRequestError, messages=[*hello, {"role": "assistant", "content": "hi"}]
    )
    assert "must be the new user message" in error.message
    error = await refused(
        openai.BadRequestError,
        messages=hello,
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
    )
    assert error.param == "tools"
    error = await refused(
        openai.BadRequestError,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
    )
    assert "only text content" in error.message
    error = await refused(openai.UnprocessableEntityError, messages=[])
    assert error.param == "messages"
    error = await refused(
        openai.UnprocessableEntityError, messages=[{"role": "user", "content": " "}]
    )
    assert "must not be empty" in error.message
    error = await refused(
        openai.APIStatusError, messages=[{"role": "user", "content": "x" * (MAX_CHARS + 1)}]
    )
    assert error.status_code == 413 and "limit is 2000" in error.message
    error = await refused(
        openai.APIStatusError, messages=[{"role": "user", "content": "x" * 20_000}]
    )
    assert error.status_code == 413 and "request body is larger" in error.message
    with pytest.raises(openai.BadRequestError) as bad_user:
        await sdk(gateway).chat.completions.create(
            model="scripted/echo", messages=hello, user="not a valid id!"
        )
    assert bad_user.value.param == "user"
    with pytest.raises(openai.UnprocessableEntityError) as bad_header:
        await sdk(gateway, "bad id!").chat.completions.create(model="scripted/echo", messages=hello)
    assert bad_header.value.param == "X-Session-Id"
    assert (await alice.get(f"/v1/sessions/{session_id}")).status_code == 404, "none created"

    # The shape itself, and that the rest of the API keeps its own.
    raw = await alice.get("/v1/chat/completions")
    assert raw.status_code == 405 and set(raw.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    assert (await alice.get("/v1/sessions/nope")).json() == {"detail": "session 'nope' not found"}


async def test_bob_cannot_reach_alices_session_by_its_id(
    gateway: Gateway, alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    session_id = new_id()
    secret = f"secret-{uuid.uuid4().hex}"
    await sdk(gateway, session_id).chat.completions.create(
        model="scripted/echo",
        messages=[
            {"role": "system", "content": f"keep {secret}"},
            {"role": "user", "content": f"my {secret}"},
        ],
    )
    alices = await messages(alice, session_id)
    reply = await sdk(gateway, session_id, key=BOB_KEY).chat.completions.create(
        model="scripted/echo", messages=[{"role": "user", "content": "what is the secret?"}]
    )
    assert secret not in reply.model_dump_json()
    assert reply.choices[0].message.content == "echo: what is the secret?"
    bobs = await messages(bob, session_id)
    assert [m["content"] for m in bobs] == ["what is the secret?", "echo: what is the secret?"]
    assert (await bob.get(f"/v1/sessions/{session_id}")).json()["owner"] == BOB
    assert await messages(alice, session_id) == alices


async def test_models_are_listed(gateway: Gateway) -> None:
    client = sdk(gateway)
    listed = [model.id async for model in client.models.list()]
    assert listed[0] == "scripted/echo" and "local/smollm2" in listed
    model = await client.models.retrieve("scripted/echo")
    assert (model.id, model.owned_by) == ("scripted/echo", "scripted")
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.models.retrieve("gpt-4o")
    assert unknown.value.code == "model_not_found"


async def test_past_a_quota_a_rate_limit_error_with_retry_after(
    environ: dict[str, str], dev_env: WorkflowEnvironment
) -> None:
    """A second gateway with a quota, for a user of this test only (quotas are per user)."""
    user = f"rl-{uuid.uuid4().hex[:8]}"
    key = f"key-{user}"
    limited = start_gateway(
        {
            **environ,
            "CHAT_API_KEYS": f'{{"{key}": "{user}"}}',
            "CHAT_QUOTA_MESSAGES_PER_MINUTE": "2",
        }
    )
    try:
        with running(limited.process):
            client = sdk(limited, new_id(), key=key, max_retries=0)
            hello: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
            for _ in range(2):
                await client.chat.completions.create(model="scripted/echo", messages=hello)
            for stream in (False, True):
                with pytest.raises(openai.RateLimitError) as limited_error:
                    await client.chat.completions.create(
                        model="scripted/echo", messages=hello, stream=stream
                    )
                response = limited_error.value.response
                assert 1 <= int(response.headers["retry-after"]) <= 60
                assert "x-should-retry" not in response.headers, "nothing was stored"
                assert limited_error.value.code == "rate_limit_exceeded"
                assert "per minute" in limited_error.value.message
    finally:
        with contextlib.suppress(RPCError):
            await dev_env.client.get_workflow_handle(quota_workflow_id(user)).terminate("done")


@pytest.mark.slow
async def test_worker_killed_mid_stream_the_retry_continues_the_text(
    dev_env: WorkflowEnvironment,
) -> None:
    """kill -9 of the worker streaming a reply: the retry on a new worker writes the same text
    (the scripted model is deterministic), so the client's stream goes on where it was."""
    environ = stack_env(dev_env, f"tq-oai-kill-{uuid.uuid4().hex[:8]}")
    doomed = start("worker", environ)
    gateway = start_gateway(environ)
    spares: list[Process] = []
    with running(gateway.process, doomed), stopping(spares):
        session_id = new_id()
        stream = await sdk(gateway, session_id).chat.completions.create(
            model="scripted/echo",
            messages=[{"role": "user", "content": "[[tok_delay=0.05]]" + WORDS}],
            stream=True,
        )
        pieces: list[str] = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if len(pieces) == 5 and doomed.proc.poll() is None:
                doomed.kill_hard()
                replacement = start("worker", environ)
                spares.append(replacement)
        with running(replacement):
            history = await messages(gateway.client(), session_id)
            await gateway.close_clients()
    assert "".join(pieces) == history[1]["content"] == "echo: " + WORDS
    assert history[1]["attempt"] >= 2, "the reply came from a retry"


# ---- fuzzed from the OpenAPI schema ------------------------------------------------------------

OPENAPI = create_app(scripted_settings("oai-fuzz")).openapi()
# Hooks aim about half the generated requests at an existing session, with a valid body: the
# happy paths, replies and streams, get fuzzed too.
FUZZED_SESSION = "oai-fuzzed"
AIMED_MESSAGES = [{"role": "user", "content": "fuzz"}]


def fuzz_schema() -> schemathesis.BaseSchema:
    config = {
        "auth": {"openapi": {"HTTPBearer": {"bearer": ALICE_KEY}}},
        "request-timeout": 30,
        "generation": {"with-security-parameters": False},
        "checks": {
            "positive_data_acceptance": {"enabled": False},
            "negative_data_rejection": {"expected-statuses": [400, 404, 405, 413, 422]},
        },
    }
    schema = schemathesis.openapi.from_dict(
        OPENAPI, config=schemathesis.Config.from_dict(config)
    ).include(tag="openai")

    @schema.hook
    def flatmap_headers(ctx: schemathesis.HookContext, headers: Any) -> Any:
        chat = ctx.operation is not None and ctx.operation.path == "/v1/chat/completions"
        if not chat or not isinstance(headers, dict | None):
            return st.just(headers)
        named = {k: v for k, v in (headers or {}).items() if k != "Idempotency-Key"}
        named["X-Session-Id"] = FUZZED_SESSION
        # Named twice as often: only named, well-formed cases reach a reply, and with half
        # of them some full-suite runs generated no non-streamed one (the check below).
        return st.sampled_from([headers, named, named])

    @schema.hook
    def flatmap_body(_: schemathesis.HookContext, body: Any) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return st.just(body)
        # Also with the known fields of a valid request, streamed or not; any unknown fields
        # are left as generated.
        said = {
            **body,
            "model": "scripted/echo",
            "messages": AIMED_MESSAGES,
            **{"n": 1, "tools": [], "functions": [], "user": None, "stream_options": None},
        }
        return st.sampled_from([body, {**said, "stream": False}, {**said, "stream": True}])

    return schema


FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


SEEN: set[tuple[int, str]] = set()  # (status, content type) of fuzzed chat completions


@pytest.fixture(scope="module")
async def fuzzed_session(gateway: Gateway) -> str:
    client = gateway.client()
    created = await client.post("/v1/sessions", json={"session_id": FUZZED_SESSION})
    assert created.status_code == 201, created.text
    return FUZZED_SESSION


@fuzz_schema().parametrize()
@FUZZ
def test_fuzzed_requests_get_documented_answers_in_openai_shape(
    case: schemathesis.Case[Any], gateway: Gateway, fuzzed_session: str
) -> None:
    # The hooks may have made a case schemathesis generated to be invalid a valid one.
    aimed = (case.headers is not None and case.headers.get("X-Session-Id") == FUZZED_SESSION) or (
        isinstance(case.body, dict) and case.body.get("messages") == AIMED_MESSAGES
    )
    excluded: list[CheckFunction] = [negative_data_rejection] if aimed else []
    response = case.call_and_validate(base_url=gateway.url, excluded_checks=excluded)
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    content_type = ",".join(response.headers.get("content-type", []))
    if case.operation.path == "/v1/chat/completions":
        SEEN.add((response.status_code, content_type.partition(";")[0]))
    if response.status_code == 200 and content_type.startswith("text/event-stream"):
        events = re.findall(r"^data: (.*)$", response.content.decode(), re.MULTILINE)
        assert events[-1] == "[DONE]" or "error" in json.loads(events[-1]), events[-1]


def test_fuzzing_reached_replies_and_streams() -> None:
    assert {(200, "application/json"), (200, "text/event-stream")} <= SEEN, SEEN
