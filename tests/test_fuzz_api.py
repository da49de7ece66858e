"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis).

A real gateway process and a real worker process on the dev server, with the scripted
provider. Requests are generated from the schema the gateway serves (valid and invalid ones,
plus schemathesis's boundary and unexpected-method cases); about half of them address Alice's
existing sessions and messages, so the happy paths (replies, streams, ends, resumes) are
fuzzed too, not only 404s.

- As Alice: every response is a non-5xx status the schema documents for the operation, with
  the documented content type, headers and body; schema-invalid input is refused with a 4xx.
- As Bob, with Alice's session and message ids: no response ever carries her data, and
  afterwards her untouched session is exactly as it was.
"""

import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import allow_header_conformance
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from tests.conftest import scripted_settings
from tests.processes import ALICE_KEY, BOB_KEY, Gateway, serving, stack_env

# The schema of the code under test, built without a server: the gateway's /openapi.json.
OPENAPI = create_app(scripted_settings("fuzz")).openapi()

FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same cases on every run: CI failures reproduce
    database=None,
    suppress_health_check=list(HealthCheck),
)
REQUEST_TIMEOUT = 30  # seconds, also the bound on reading one event stream
REJECTIONS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]

# Alice's sessions the fuzzer may address (and end, resume, send to...).
FUZZED_SESSIONS = ["fuzz-a", "fuzz-b"]
FUZZED_MESSAGES = ["m-1", "m-2"]
# Alice's session that only Bob's requests address: it must come out untouched.
PRIVATE_SESSION = "alice-private"
SECRET = f"secret-{uuid.uuid4().hex}"

# `POST .../messages/stream` is also `GET .../messages/{message_id}` for message id "stream",
# so its 405 rightly allows GET, which the schema lists under the other path.
OVERLAPPING_PATH = "/v1/sessions/{session_id}/messages/stream"


def aimed_schema(
    key: str, sessions: list[str], always: bool, creates: list[str], **config: Any
) -> schemathesis.BaseSchema:
    """The API schema as the user of API key `key` calls it. Generated requests address
    `sessions` and their messages: every one (`always`) or about half of them; about half of
    the sessions it creates take an id from `creates`."""
    options = {
        "auth": {"openapi": {"HTTPBearer": {"bearer": key}}},
        "max-stream-events": 1000,
        "request-timeout": REQUEST_TIMEOUT,
        "generation": {"with-security-parameters": False},  # every request is `key`'s
        "checks": {
            # The schema cannot say which values the deployment accepts (known tool names,
            # non-blank content, limits from settings): valid-looking input may get a 4xx.
            "positive_data_acceptance": {"enabled": False},
            # Invalid input may also be refused for its size, before it is parsed.
            "negative_data_rejection": {"expected-statuses": REJECTIONS},
        },
        **config,
    }
    schema = schemathesis.openapi.from_dict(OPENAPI, config=schemathesis.Config.from_dict(options))

    def known(value: Any, ids: list[str], always: bool = always) -> st.SearchStrategy[Any]:
        return st.sampled_from(ids) if always else st.one_of(st.just(value), st.sampled_from(ids))

    @schema.hook
    def flatmap_path_parameters(_: schemathesis.HookContext, params: Any) -> Any:
        if not isinstance(params, dict):
            return st.just(params)
        targets = {"session_id": sessions, "message_id": FUZZED_MESSAGES}
        return st.fixed_dictionaries(
            {
                name: known(value, targets[name]) if name in targets else st.just(value)
                for name, value in params.items()
            }
        )

    @schema.hook
    def flatmap_body(ctx: schemathesis.HookContext, body: Any) -> Any:
        creating = ctx.operation is not None and ctx.operation.label == "POST /v1/sessions"
        if not (creating and isinstance(body, dict)):
            return st.just(body)
        chosen = known(body.get("session_id"), creates, always=False)
        return chosen.map(lambda session_id: {**body, "session_id": session_id})

    return schema


ALICE_SCHEMA = aimed_schema(ALICE_KEY, FUZZED_SESSIONS, always=False, creates=FUZZED_SESSIONS)
# Bob's requests all aim at Alice's ids (no boundary or example cases). He may create a session
# of his own under one of them, which must stay his; the others exist for Alice only.
BOB_SCHEMA = aimed_schema(
    BOB_KEY,
    [*FUZZED_SESSIONS, PRIVATE_SESSION],
    always=True,
    creates=FUZZED_SESSIONS[:1],
    phases={"examples": {"enabled": False}, "coverage": {"enabled": False}},
)


@dataclass
class Stack:
    gateway: Gateway
    alice: httpx.AsyncClient
    private_history: list[dict[str, Any]]


@pytest.fixture(scope="module")
async def stack(dev_env: WorkflowEnvironment) -> AsyncIterator[Stack]:
    task_queue = f"tq-fuzz-{uuid.uuid4().hex[:8]}"
    environ = stack_env(
        dev_env,
        task_queue,
        max_message_chars=2000,
        max_system_prompt_chars=500,
        max_request_bytes=16_384,
        reply_wait_seconds=5,
    )
    with serving(environ) as gateway:
        alice = gateway.client(ALICE_KEY)
        for session_id in [*FUZZED_SESSIONS, PRIVATE_SESSION]:
            created = await alice.post(
                "/v1/sessions",
                json={"session_id": session_id, "system_prompt": f"keep {SECRET} safe"},
            )
            assert created.status_code == 201, created.text
            for message_id in FUZZED_MESSAGES:
                sent = await alice.post(
                    f"/v1/sessions/{session_id}/messages",
                    json={"message_id": message_id, "content": f"my {SECRET} is here"},
                )
                assert sent.status_code == 200, sent.text
        private = await alice.get(f"/v1/sessions/{PRIVATE_SESSION}/messages")
        yield Stack(gateway, alice, private.json()["messages"])
        await gateway.close_clients()
    # Leave nothing running on the shared dev server.
    query = f'TaskQueue = "{task_queue}" AND ExecutionStatus = "Running"'
    async for run in dev_env.client.list_workflows(query):
        with contextlib.suppress(RPCError):
            await dev_env.client.get_workflow_handle(run.id).terminate("fuzzing finished")


@ALICE_SCHEMA.parametrize()
@FUZZ
def test_alice_gets_only_documented_answers(case: schemathesis.Case[Any], stack: Stack) -> None:
    excluded = [allow_header_conformance] if case.operation.path == OVERLAPPING_PATH else []
    response = case.call_and_validate(base_url=stack.gateway.url, excluded_checks=excluded)
    content_type = ",".join(response.headers.get("content-type", []))
    if response.status_code == 200 and content_type.startswith("text/event-stream"):
        # A turn's stream ends by itself once the turn is over, and says how it ended.
        assert not response.stream_cut_short, "the event stream did not end"
        body = response.content.decode()
        if case.operation.path == "/v1/chat/completions":  # OpenAI's SSE: data lines only
            last = re.findall(r"^data: (.*)$", body, re.MULTILINE)[-1]
            assert last == "[DONE]" or "error" in json.loads(last), last
        else:
            events = re.findall(r"^event: (\w+)$", body, re.MULTILINE)
            assert events[-1] in ("turn_completed", "error"), events


@BOB_SCHEMA.parametrize()
@FUZZ
def test_bob_never_reads_alices_sessions(case: schemathesis.Case[Any], stack: Stack) -> None:
    response = case.call(base_url=stack.gateway.url)
    assert response.status_code < 500, response.text
    assert SECRET not in response.text
    assert '"owner":"alice"' not in response.text.replace(" ", "")


async def test_bobs_attack_left_alices_session_as_it_was(stack: Stack) -> None:
    status = (await stack.alice.get(f"/v1/sessions/{PRIVATE_SESSION}")).json()
    assert (status["status"], status["turns"], status["runs"]) == ("active", 2, 1)
    history = (await stack.alice.get(f"/v1/sessions/{PRIVATE_SESSION}/messages")).json()
    assert history["messages"] == stack.private_history
    assert json.dumps(history).count(SECRET) == 4
