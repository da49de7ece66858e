"""External payload storage (common/payload_store.py): large payloads live in files, history
holds a reference.

The driver on its own (content addressing, atomic files, refused claims), then real worker and
gateway processes on the dev server with short runs and a large carried state: the
continue-as-new input is a reference, the files hold the data (sealed when encryption is on),
and the conversation reads end to end.
"""

import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.converter import StorageDriverClaim, StorageDriverRetrieveContext
from temporalio.converter import StorageDriverStoreContext as StoreContext
from temporalio.testing import WorkflowEnvironment

from common.encryption import ENCODING, new_key
from common.ids import workflow_id
from common.payload_store import (
    CLAIM_KEY,
    HANDOVER_MIN_BYTES,
    FilePayloadStore,
    PayloadStoreError,
)
from common.settings import STORED_RUN_TURNS, Settings
from common.temporal_client import data_converter
from devstack import __main__ as devstack
from tests.processes import Gateway, new_session, serving, stack_env
from workflows.messages import (
    DEFAULT_MAX_TURNS_PER_RUN,
    CarriedState,
    ChatMessage,
    SessionConfig,
    SessionInput,
)

THRESHOLD = 16 * 1024
TEXT_CHARS = 15_000  # four messages (two turns) carry ~60 KB into the next run
MARKER = "quince-tarragon-8675309"
REFERENCE_TYPE = b"temporal.api.sdk.v1.ExternalStorageReference"


def blobs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))


def text(i: int) -> str:
    head = f"{MARKER} message {i} "
    return head + "x" * (TEXT_CHARS - len(head))


def is_reference(payload: Payload) -> bool:
    return payload.metadata.get("messageType") == REFERENCE_TYPE


# ---- the driver -----------------------------------------------------------------------------


async def test_files_are_content_addressed_and_checked_when_read(tmp_path: Path) -> None:
    store = FilePayloadStore(tmp_path / "store")
    one = Payload(metadata={"encoding": b"json/plain"}, data=b'"one"')
    two = Payload(metadata={"encoding": b"json/plain"}, data=b'"two"')
    claims = await store.store(StoreContext(), [one, two, one])
    digests = [c.claim_data[CLAIM_KEY] for c in claims]
    assert digests[0] == digests[2] != digests[1], "same bytes, same file"
    assert [p.name for p in blobs(store.directory)] == sorted(set(digests))
    assert not [p for p in store.directory.rglob(".*")], "no temporary file left behind"
    got = await store.retrieve(StorageDriverRetrieveContext(), claims)
    assert got == [one, two, one]

    path = store.path_of(digests[1])
    path.write_bytes(path.read_bytes().replace(b"two", b"tw0"))
    with pytest.raises(PayloadStoreError, match=f"sha256={digests[1]} does not match"):
        await store.retrieve(StorageDriverRetrieveContext(), [claims[1]])
    path.unlink()
    with pytest.raises(PayloadStoreError, match=f"sha256={digests[1]} is missing"):
        await store.retrieve(StorageDriverRetrieveContext(), [claims[1]])
    for bad in ({CLAIM_KEY: "../../etc/passwd"}, {}, {CLAIM_KEY: digests[0].upper()}):
        with pytest.raises(PayloadStoreError, match="malformed payload store claim"):
            await store.retrieve(StorageDriverRetrieveContext(), [StorageDriverClaim(bad)])


async def test_the_converter_stores_large_payloads_sealed_and_small_ones_inline(
    tmp_path: Path,
) -> None:
    settings = Settings(
        _env_file=None,
        encryption_keys={"k1": new_key()},
        payload_store_dir=tmp_path,
        payload_store_threshold_bytes=THRESHOLD,
    )
    converter = data_converter(settings)
    small, large = f"{MARKER} small", text(1) * 2
    encoded = await converter.encode([small, large])
    assert not is_reference(encoded[0]) and encoded[0].metadata["encoding"] == ENCODING
    assert is_reference(encoded[1]) and encoded[1].ByteSize() < 300
    (blob,) = blobs(tmp_path)
    assert MARKER.encode() not in blob.read_bytes()
    assert Payload.FromString(blob.read_bytes()).metadata["encoding"] == ENCODING
    assert await converter.decode(encoded, [str, str]) == [small, large]
    blob.unlink()
    with pytest.raises(PayloadStoreError, match="is missing"):
        await converter.decode(encoded, [str, str])


async def test_a_hand_over_goes_to_the_store_whatever_its_size(tmp_path: Path) -> None:
    """Runs are short with a store, so a carried state of a few KB must not be written inline
    into the closing and the starting event of every run (sealed or not)."""
    now = datetime.now(UTC)
    config = SessionConfig(model="scripted/echo")
    words = [
        ChatMessage(
            seq=i, id=f"m{i}", role="user", content=f"{MARKER} {i} " + "y" * 300, created_at=now
        )
        for i in (1, 2)
    ]
    carried = CarriedState(
        config=config, messages=words, created_at=now, last_activity_at=now, message_count=2
    )
    handover = SessionInput(owner="alice", session_id="s1", config=config, carried=carried)
    start = SessionInput(owner="alice", session_id="s2", config=config)
    assert len(handover.model_dump_json()) < HANDOVER_MIN_BYTES * 2 < THRESHOLD
    for keys in ({}, {"k1": new_key()}):
        directory = tmp_path / f"keys-{len(keys)}"
        converter = data_converter(
            Settings(
                _env_file=None,
                encryption_keys=keys,
                payload_store_dir=directory,
                payload_store_threshold_bytes=THRESHOLD,
            )
        )
        encoded = await converter.encode([handover, start])
        assert is_reference(encoded[0]), "a hand-over far under the threshold is stored"
        assert not is_reference(encoded[1]), "a start carrying nothing stays inline"
        assert len(blobs(directory)) == 1
        decoded = await converter.decode(encoded, [SessionInput, SessionInput])
        assert decoded == [handover, start]


def test_store_settings() -> None:
    assert Settings(_env_file=None).payload_store_dir is None, "off unless configured"
    assert data_converter(Settings(_env_file=None)).external_storage is None
    assert Settings(_env_file=None, payload_store_dir="").payload_store_dir is None
    for bad in (100, 600 * 1024):
        with pytest.raises(ValueError, match="payload_store_threshold_bytes"):
            Settings(_env_file=None, payload_store_threshold_bytes=bad)


def test_make_run_keeps_payloads_with_its_data() -> None:
    env: dict[str, str] = {}
    said = devstack._dev_payload_store(env, Settings(_env_file=None))
    path = Path(env["CHAT_PAYLOAD_STORE_DIR"])
    assert path.is_absolute() and path == (devstack.DATA / "payloads").resolve()
    assert "64 KiB" in said
    configured = Settings(_env_file=None, payload_store_dir="/srv/payloads")
    env = {}
    assert devstack._dev_payload_store(env, configured).endswith("/srv/payloads")
    assert env == {}, "a configured directory is left as it is"


# ---- real processes -------------------------------------------------------------------------


def store_env(dev_env: WorkflowEnvironment, directory: Path, **more: object) -> dict[str, str]:
    return stack_env(
        dev_env,
        f"tq-ps-{uuid.uuid4().hex[:8]}",
        max_turns_per_run=2,
        carry_max_chars=200_000,
        compaction_enabled=False,  # a summary would shorten what is carried
        payload_store_dir=directory,
        payload_store_threshold_bytes=THRESHOLD,
        **more,
    )


def settings_from(environ: dict[str, str]) -> Settings:
    chat = {k: v for k, v in environ.items() if k.startswith("CHAT_")}
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("CHAT_")]:
            patch.delenv(key)
        for key, value in chat.items():
            patch.setenv(key, value)
        return Settings(_env_file=None)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("payloads")


@pytest.fixture(scope="module")
def environ(dev_env: WorkflowEnvironment, store_dir: Path) -> dict[str, str]:
    return store_env(dev_env, store_dir)


@pytest.fixture(scope="module")
async def gateway(environ: dict[str, str]) -> AsyncIterator[Gateway]:
    with serving(environ) as gw:
        yield gw
        await gw.close_clients()


async def say(client: httpx.AsyncClient, session_id: str, content: str) -> Any:
    response = await client.post(f"/v1/sessions/{session_id}/messages", json={"content": content})
    assert response.status_code == 200, response.text
    return response.json()


async def read_all(client: httpx.AsyncClient, session_id: str, limit: int) -> list[Any]:
    found: list[Any] = []
    after: int | None = 0
    while after is not None:
        response = await client.get(
            f"/v1/sessions/{session_id}/messages", params={"after": after, "limit": limit}
        )
        assert response.status_code == 200, response.text
        found += response.json()["messages"]
        after = response.json()["next"]
    return found


async def continued_run(env: WorkflowEnvironment, wf_id: str) -> tuple[Any, Any]:
    """(the first run's ContinuedAsNew event, the next run's Started event), as stored."""
    latest = await env.client.get_workflow_handle(wf_id).fetch_history()
    started = latest.events[0]
    assert started.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    previous = started.workflow_execution_started_event_attributes.continued_execution_run_id
    assert previous, "the session has continued as new"
    first = await env.client.get_workflow_handle(wf_id, run_id=previous).fetch_history()
    ended = first.events[-1]
    assert ended.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    return ended, started


async def test_a_large_carried_state_continues_as_new_by_reference(
    dev_env: WorkflowEnvironment,
    environ: dict[str, str],
    store_dir: Path,
    alice: httpx.AsyncClient,
) -> None:
    session_id = await new_session(alice)
    texts = [text(i) for i in range(3)]
    for content in texts:  # two turns fill the run; the third is the next run's
        await say(alice, session_id, content)
    wf_id = workflow_id("alice", session_id)
    ended, started = await continued_run(dev_env, wf_id)
    (carried_in,) = started.workflow_execution_started_event_attributes.input.payloads
    (carried_out,) = ended.workflow_execution_continued_as_new_event_attributes.input.payloads
    for payload in (carried_in, carried_out):
        assert is_reference(payload), payload.metadata
        assert payload.ByteSize() < 400
        assert payload.external_payloads[0].size_bytes > 4 * TEXT_CHARS
    assert started.ByteSize() < 2_000 and ended.ByteSize() < 2_000

    # The stored file is the carried state itself, in clear without encryption keys.
    claim = json.loads(carried_in.data)["claimData"][CLAIM_KEY]
    path = FilePayloadStore(store_dir).path_of(claim)
    assert path.read_bytes().count(MARKER.encode()) == 4  # two user messages, two echoes
    converter = data_converter(settings_from(environ))
    (state,) = await converter.decode([carried_in], [SessionInput])
    assert isinstance(state, SessionInput) and state.carried is not None
    assert [m.content for m in state.carried.messages if m.role == "user"] == texts[:2]

    # The conversation reads end to end, a page at a time across the runs, and as an export.
    expected = [t for content in texts for t in (content, f"echo: {content}")]
    for limit in (1, 500):
        assert [m["content"] for m in await read_all(alice, session_id, limit)] == expected
    exported = (await alice.get(f"/v1/sessions/{session_id}/export")).json()
    assert [m["content"] for m in exported["messages"]] == expected

    # A query result above the threshold goes by reference too: a client with the store reads
    # it, one without is told the payload is stored elsewhere.
    client = await Client.connect(
        dev_env.client.service_client.config.target_host, data_converter=converter
    )
    snapshot = await client.get_workflow_handle(wf_id).query("snapshot", result_type=CarriedState)
    assert [m.content for m in snapshot.messages] == expected
    with pytest.raises(RuntimeError, match="TMPRL1105"):
        await dev_env.client.get_workflow_handle(wf_id).query("snapshot")

    # Without its file the reference cannot be read, and the error says which one and why.
    path.rename(path.with_name(".moved"))
    try:
        with pytest.raises(PayloadStoreError, match=f"sha256={claim} is missing"):
            await converter.decode([carried_in], [SessionInput])
    finally:
        path.with_name(".moved").rename(path)


async def test_with_encryption_the_files_hold_no_plain_text(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    environ = store_env(dev_env, tmp_path, encryption_keys={"k1": new_key()})
    with serving(environ) as gw:
        alice = gw.client()
        try:
            session_id = await new_session(alice)
            texts = [text(i) for i in range(3)]
            for content in texts:
                await say(alice, session_id, content)
            expected = [t for content in texts for t in (content, f"echo: {content}")]
            assert [m["content"] for m in await read_all(alice, session_id, 2)] == expected
        finally:
            await gw.close_clients()
    _, started = await continued_run(dev_env, workflow_id("alice", session_id))
    (carried_in,) = started.workflow_execution_started_event_attributes.input.payloads
    assert is_reference(carried_in)
    files = blobs(tmp_path)
    assert files, "the carried state was stored"
    for path in files:
        sealed = path.read_bytes()
        assert MARKER.encode() not in sealed, path.name
        assert Payload.FromString(sealed).metadata["encoding"] == ENCODING


def test_runs_are_short_when_the_payload_store_carries_their_hand_over(tmp_path: Path) -> None:
    assert Settings(_env_file=None).turns_per_run() == DEFAULT_MAX_TURNS_PER_RUN
    stored = Settings(_env_file=None, payload_store_dir=tmp_path)
    assert stored.turns_per_run() == STORED_RUN_TURNS < DEFAULT_MAX_TURNS_PER_RUN
    chosen = Settings(_env_file=None, payload_store_dir=tmp_path, max_turns_per_run=100)
    assert chosen.turns_per_run() == 100
