"""The codec endpoint (Temporal's remote codec protocol) on a real stack: a dev server, a worker
and a gateway with encryption keys. Alice chats; her history in Temporal is ciphertext; the
gateway opens it for her (by API key, by her UI token, for the Temporal CLI) and for no one else.
"""

import base64
import json
import logging
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import History
from temporalio.converter import WorkflowSerializationContext
from temporalio.testing import WorkflowEnvironment

from api.codec import (
    _RedactCodecTokens,
    allowed_origins,
    codec_token,
    decode_for,
)
from common.encryption import (
    ENCODING,
    KEY_ID,
    WORKFLOW_ID,
    EncryptionCodec,
    new_key,
    parse_key,
    sealed_for,
)
from common.ids import workflow_id
from common.settings import Settings
from devstack.server import binary
from tests.payloads import payloads_in
from tests.processes import (
    ALICE_KEY,
    BOB_KEY,
    Gateway,
    new_session,
    serving,
    stack_env,
    start_gateway,
)

KEY_A = new_key()
KEY_B = new_key()
SECRET = "codec-token-secret-for-tests"
UI_ORIGIN = "http://localhost:8233"
API_LIMIT = 16_384
CODEC_LIMIT = 65_536


@pytest.fixture(scope="module")
def environ(dev_env: WorkflowEnvironment) -> dict[str, str]:
    return stack_env(
        dev_env,
        f"tq-codec-{uuid.uuid4().hex[:8]}",
        encryption_keys={"a": KEY_A},
        codec_token_secret=SECRET,
        temporal_ui_url=UI_ORIGIN + "/",
        max_request_bytes=API_LIMIT,
        codec_max_request_bytes=CODEC_LIMIT,
    )


@pytest.fixture(scope="module")
async def gateway(environ: dict[str, str]) -> AsyncIterator[Gateway]:
    with serving(environ) as gw:
        yield gw
        await gw.close_clients()


@dataclass
class Conversation:
    workflow_id: str
    marker: str
    payloads: list[Payload]  # every payload of the history sealed for the session


@pytest.fixture(scope="module")
async def conversation(alice: httpx.AsyncClient, dev_env: WorkflowEnvironment) -> Conversation:
    marker = f"pumpernickel-{uuid.uuid4().hex[:8]}"
    session_id = await new_session(alice, system_prompt=f"{marker} keeper")
    sent = await alice.post(
        f"/v1/sessions/{session_id}/messages", json={"content": f"my secret is {marker}"}
    )
    assert sent.status_code == 200, sent.text
    assert marker in sent.json()["reply"]["content"]
    wf_id = workflow_id("alice", session_id)
    fetched = await dev_env.client.get_workflow_handle(wf_id).fetch_history()
    history = History(events=fetched.events)
    assert marker.encode() not in history.SerializeToString(), "history in clear"
    sealed = [p for p in payloads_in(history) if sealed_for(p) == wf_id]
    assert len(sealed) >= 3, "input, message and reply at least"
    return Conversation(wf_id, marker, sealed)


def body(payloads: list[Payload]) -> dict[str, Any]:
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


def texts(answer: dict[str, Any]) -> list[str]:
    return [
        base64.b64decode(p.get("data", "")).decode("utf-8", "replace") for p in answer["payloads"]
    ]


def opened_locally(payloads: list[Payload]) -> list[Payload]:
    codec = EncryptionCodec({"a": parse_key("a", KEY_A)}, "a")
    return [codec.open(p) for p in payloads]


async def test_alice_reads_her_history_in_clear(
    alice: httpx.AsyncClient, conversation: Conversation
) -> None:
    sent = body(conversation.payloads)
    response = await alice.post("/codec/decode", json=sent, headers={"X-Namespace": "default"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer == body(opened_locally(conversation.payloads))
    assert all(p["metadata"]["encoding"] != "YmluYXJ5L2VuY3J5cHRlZA==" for p in answer["payloads"])
    assert any(f"my secret is {conversation.marker}" in text for text in texts(answer))
    assert any(f"echo: my secret is {conversation.marker}" in text for text in texts(answer))


async def test_bob_gets_alices_payloads_back_sealed(
    bob: httpx.AsyncClient, conversation: Conversation
) -> None:
    sent = body(conversation.payloads)
    for path in ("/codec/decode", f"/codec/u/{codec_token(SECRET, 'bob')}/decode"):
        response = await bob.post(path, json=sent)
        assert response.status_code == 200, response.text
        assert response.json() == sent, path
        assert not any(conversation.marker in text for text in texts(response.json()))


async def test_the_ui_url_from_v1_codec_decodes_for_its_user_only(
    gateway: Gateway, alice: httpx.AsyncClient, conversation: Conversation
) -> None:
    info = (await alice.get("/v1/codec")).json()
    token = codec_token(SECRET, "alice")
    assert info == {
        "encryption": True,
        "endpoint": f"{gateway.url}/codec",
        "ui_endpoint": f"{gateway.url}/codec/u/{token}",
        "ui_origins": [UI_ORIGIN],
    }
    # What the UI does: POST <endpoint>/decode with X-Namespace and no Authorization.
    ui = gateway.client(key=None)
    sent = body(conversation.payloads)
    response = await ui.post(
        info["ui_endpoint"] + "/decode",
        json=sent,
        headers={"X-Namespace": "default", "Origin": UI_ORIGIN},
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == UI_ORIGIN
    assert any(conversation.marker in text for text in texts(response.json()))
    other_namespace = await ui.post(
        info["ui_endpoint"] + "/decode", json=sent, headers={"X-Namespace": "elsewhere"}
    )
    assert other_namespace.json() == sent, "only this deployment's namespace is decoded"


@pytest.mark.parametrize(
    "path",
    [
        f"/codec/u/alice.{codec_token(SECRET, 'bob').partition('.')[2]}/decode",
        f"/codec/u/{codec_token('another secret', 'alice')}/decode",
        f"/codec/u/{codec_token(SECRET, 'mallory')}/decode",  # no such user in CHAT_API_KEYS
        "/codec/u/alice/decode",
        "/codec/u/%C3%A9.x/decode",
    ],
)
async def test_wrong_codec_tokens_are_refused(gateway: Gateway, path: str) -> None:
    response = await gateway.client(key=None).post(path, json={"payloads": []})
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": "unknown codec token"}


@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_the_api_key_paths_need_a_key(gateway: Gateway, key: str | None) -> None:
    client = gateway.client(key=key)
    for path in ("/codec/decode", "/codec/encode"):
        response = await client.post(path, json={"payloads": []})
        assert response.status_code == 401, path
    response = await client.post("/codec/decode", content=b"not json")
    assert response.status_code == 401, "authentication comes before the body is read"
    assert (await client.get("/v1/codec")).status_code == 401


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"{}",
        b'{"payloads": "x"}',
        b'{"payloads": [{"metadata": {"encoding": 7}}]}',
        b'{"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "!!not base64"}]}',
        b'{"payloads": [{"metadata": {"encoding": "a"}}]}',
        '{"payloads": [{"metadata": {"encoding": "\u00e9t\u00e9"}}]}'.encode(),
        b'{"payloads": [{"metadata": {"\\ud800": "YQ=="}}]}',
    ],
)
async def test_malformed_bodies_get_a_clear_4xx(alice: httpx.AsyncClient, content: bytes) -> None:
    for path in ("/codec/decode", "/codec/encode"):
        response = await alice.post(
            path, content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, (path, response.text)
        assert response.json()["detail"]


async def test_forged_sealed_payloads_come_back_unchanged(alice: httpx.AsyncClient) -> None:
    def forged(data: bytes, **metadata: bytes) -> Payload:
        return Payload(metadata={"encoding": ENCODING, **metadata}, data=data)

    payloads = [
        forged(b"x" * 40, **{WORKFLOW_ID: b"\xff\xfe"}),
        forged(b"short", **{WORKFLOW_ID: b"chat:alice:s1", KEY_ID: b"a"}),
        forged(b"x" * 40, **{WORKFLOW_ID: b"chat:alice:s1", KEY_ID: b"\xff"}),
        forged(b"x" * 40, **{WORKFLOW_ID: b"chat:alice:s1", KEY_ID: b"a"}),
        forged(b"x" * 40, **{WORKFLOW_ID: b"chat:alice:s1", KEY_ID: b"unknown"}),
    ]
    response = await alice.post("/codec/decode", json=body(payloads))
    assert response.status_code == 200, response.text
    assert response.json() == body(payloads)


async def test_codec_bodies_have_their_own_limit(alice: httpx.AsyncClient) -> None:
    big = Payload(metadata={"encoding": b"json/plain"}, data=b'"' + b"x" * 30_000 + b'"')
    fits = body([big])  # over the API's limit, within the codec's
    assert API_LIMIT < len(json.dumps(fits)) < CODEC_LIMIT
    response = await alice.post("/codec/decode", json=fits)
    assert response.status_code == 200 and response.json() == fits
    refused = await alice.post("/v1/sessions", json={"system_prompt": "x" * API_LIMIT})
    assert refused.status_code == 413
    too_big = body([big, big, big])
    response = await alice.post("/codec/decode", json=too_big)
    assert response.status_code == 413
    assert str(CODEC_LIMIT) in response.json()["detail"]


async def test_cors_is_open_to_the_ui_on_codec_paths_only(gateway: Gateway) -> None:
    client = gateway.client(key=None)
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    path = f"/codec/u/{codec_token(SECRET, 'alice')}/decode"
    allowed = await client.options(path, headers={"Origin": UI_ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == UI_ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    allowed_headers = allowed.headers["access-control-allow-headers"].lower()
    assert {"content-type", "x-namespace", "authorization"} <= set(allowed_headers.split(", "))
    assert allowed.headers["access-control-allow-credentials"] == "true"

    elsewhere = await client.options(path, headers={"Origin": "http://evil.example", **preflight})
    assert elsewhere.status_code == 400
    assert "access-control-allow-origin" not in elsewhere.headers
    simple = await client.post(
        path, json={"payloads": []}, headers={"Origin": "http://evil.example"}
    )
    assert "access-control-allow-origin" not in simple.headers

    for api_path in ("/v1/sessions", "/v1/codec", "/healthz"):
        response = await client.options(api_path, headers={"Origin": UI_ORIGIN, **preflight})
        assert "access-control-allow-origin" not in response.headers, api_path
        response = await gateway.client().get(api_path, headers={"Origin": UI_ORIGIN})
        assert "access-control-allow-origin" not in response.headers, api_path


async def test_encode_seals_for_no_workflow(alice: httpx.AsyncClient) -> None:
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"from the UI"')
    sealed_already = EncryptionCodec({"a": parse_key("a", KEY_A)}, "a").seal(plain)
    response = await alice.post("/codec/encode", json=body([plain, sealed_already]))
    assert response.status_code == 200, response.text
    encoded = response.json()
    assert encoded["payloads"][1] == body([sealed_already])["payloads"][0], "not sealed twice"
    sealed = json_format.ParseDict(encoded["payloads"][0], Payload())
    assert sealed.metadata["encoding"] == ENCODING and sealed.metadata[KEY_ID] == b"a"
    assert WORKFLOW_ID not in sealed.metadata and b"from the UI" not in sealed.data
    assert opened_locally([sealed]) == [plain], "workers can open it"
    again = await alice.post("/codec/decode", json=encoded)
    assert again.json()["payloads"][0] == encoded["payloads"][0], "no decode call opens it"


async def test_the_temporal_cli_decodes_through_the_gateway(
    gateway: Gateway, dev_env: WorkflowEnvironment, conversation: Conversation
) -> None:
    def show(key: str) -> list[Payload]:
        """The history's payloads as `temporal workflow show` prints them through the codec."""
        result = subprocess.run(
            [
                str(binary("temporal")),
                "workflow",
                "show",
                "--address",
                dev_env.client.service_client.config.target_host,
                "--workflow-id",
                conversation.workflow_id,
                "--codec-endpoint",
                f"{gateway.url}/codec",
                "--codec-auth",
                f"Bearer {key}",
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return list(json_payloads(json.loads(result.stdout)))

    as_alice, as_bob = show(ALICE_KEY), show(BOB_KEY)
    assert len(as_alice) == len(as_bob) >= len(conversation.payloads)
    assert any(f"my secret is {conversation.marker}".encode() in p.data for p in as_alice)
    assert not any(conversation.marker.encode() in p.data for p in as_bob)
    sealed = {p.data for p in as_bob if sealed_for(p) == conversation.workflow_id}
    assert sealed == {p.data for p in conversation.payloads}, "Bob sees only the ciphertext"


def json_payloads(value: Any) -> Iterator[Payload]:
    """Payloads in protobuf JSON (objects with base64 `metadata`), however deep."""
    if isinstance(value, dict):
        if isinstance(value.get("metadata"), dict) and "encoding" in value["metadata"]:
            yield json_format.ParseDict(value, Payload(), ignore_unknown_fields=True)
            return
        for item in value.values():
            yield from json_payloads(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_payloads(item)


async def test_after_a_key_rotation_old_history_stays_readable(
    environ: dict[str, str], conversation: Conversation
) -> None:
    """A gateway whose keys are {a, b}, b current, opens history sealed with a; without a
    it leaves it sealed (no error); without a codec token secret the UI paths are 404."""
    assert {p.metadata[KEY_ID] for p in conversation.payloads} == {b"a"}
    rotated = {
        **environ,
        "CHAT_ENCRYPTION_KEYS": json.dumps({"a": KEY_A, "b": KEY_B}),
        "CHAT_ENCRYPTION_KEY_ID": "b",
    }
    del rotated["CHAT_CODEC_TOKEN_SECRET"]
    gateway = start_gateway(rotated)
    try:
        alice = gateway.client()
        sent = body(conversation.payloads)
        answer = (await alice.post("/codec/decode", json=sent)).json()
        assert any(conversation.marker in text for text in texts(answer))
        plain = Payload(metadata={"encoding": b"json/plain"}, data=b"1")
        encoded = (await alice.post("/codec/encode", json=body([plain]))).json()
        assert encoded["payloads"][0]["metadata"][KEY_ID] == base64.b64encode(b"b").decode()
        token_path = f"/codec/u/{codec_token(SECRET, 'alice')}/decode"
        assert (await alice.post(token_path, json=sent)).status_code == 404
        assert (await alice.get("/v1/codec")).json()["ui_endpoint"] is None
        await gateway.close_clients()
    finally:
        gateway.process.stop()


async def test_ownership_and_missing_keys_at_unit_level() -> None:
    key_a, key_b = parse_key("a", KEY_A), parse_key("b", KEY_B)
    codec = EncryptionCodec({"a": key_a, "b": key_b}, "b")

    def sealed(wf_id: str | None, key: str = "b") -> Payload:
        keyed = EncryptionCodec({"a": key_a, "b": key_b}, key)
        if wf_id is not None:
            keyed = keyed.with_context(WorkflowSerializationContext("default", wf_id))
        return keyed.seal(Payload(metadata={"encoding": b"json/plain"}, data=b'"x"'))

    payloads = [
        sealed("chat:alice:s1", key="a"),  # an old key: still opened
        sealed("chat:alice:s2"),
        sealed("chat:bob:s1"),
        sealed("alice"),  # not a session id
        sealed("other:alice:s1"),
        sealed(None),
        Payload(metadata={"encoding": b"json/plain"}, data=b'"clear"'),
    ]
    opened = decode_for("alice", codec, payloads)
    assert [p is not None for p in opened] == [True, True, False, False, False, False, False]
    only_b = EncryptionCodec({"b": key_b}, "b")
    assert decode_for("alice", only_b, payloads[:2])[0] is None, "a missing key leaves it sealed"


def test_access_logs_do_not_show_codec_tokens() -> None:
    token = codec_token(SECRET, "alice")
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "POST", f"/codec/u/{token}/decode", "1.1", 200),
        None,
    )
    assert _RedactCodecTokens().filter(record)
    line = record.getMessage()
    assert token not in line and token.partition(".")[2] not in line
    assert "/codec/u/<token>/decode" in line


def test_cors_origins_come_from_the_ui_url_unless_set() -> None:
    ui = Settings(_env_file=None, temporal_ui_url="https://temporal.example.com:8443/ui/")
    assert allowed_origins(ui) == ["https://temporal.example.com:8443"]
    both = ui.model_copy(
        update={"codec_allowed_origins": ["http://localhost:8233/", "http://127.0.0.1:8233"]}
    )
    assert allowed_origins(both) == ["http://localhost:8233", "http://127.0.0.1:8233"]
