"""Encrypted payloads: the codec itself, and the proof that Temporal's database holds no text.

The proof runs the real stack (dev server on a SQLite file, worker and gateway processes)
twice with the same conversation: with keys the file holds none of the marker strings; without
keys it holds them all, which shows the search would have found them.
"""

import base64
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import WorkflowSerializationContext

from activities.providers.scripted import tool_script
from common.encryption import (
    ENCODING,
    EncryptionCodec,
    EncryptionKeyError,
    new_key,
    parse_key,
    sealed_for,
)
from common.settings import Settings
from devstack.server import start_dev_env
from tests.processes import messages, new_session, serving, stack_env

MARKERS = ("pumpernickel-marmalade", "424242", "424243")


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


def for_workflow(codec: EncryptionCodec, workflow_id: str) -> EncryptionCodec:
    return codec.with_context(WorkflowSerializationContext("default", workflow_id))


async def test_sealed_payloads_open_only_with_their_key_and_workflow_id() -> None:
    key = parse_key("k1", new_key())
    codec = for_workflow(EncryptionCodec({"k1": key}, "k1"), "chat:alice:s1")
    (sealed,) = await codec.encode([plain("hello alice")])
    assert b"hello alice" not in sealed.SerializeToString()
    assert sealed.metadata["encoding"] == ENCODING and sealed_for(sealed) == "chat:alice:s1"
    (opened,) = await codec.decode([sealed])
    assert opened == plain("hello alice")
    (again,) = await codec.encode([plain("hello alice")])
    assert again.data != sealed.data, "a fresh nonce per payload"
    forged = Payload()
    forged.CopyFrom(sealed)
    forged.metadata["chat-workflow-id"] = b"chat:bob:s1"
    with pytest.raises(EncryptionKeyError, match="authentication"):
        await codec.decode([forged])
    unsealed = plain("written before encryption was on")
    assert await codec.decode([unsealed]) == [unsealed]
    assert sealed_for(unsealed) is None


async def test_after_a_rotation_old_payloads_stay_readable() -> None:
    old, new = parse_key("2026-10", new_key()), parse_key("2026-11", new_key())
    before = for_workflow(EncryptionCodec({"2026-10": old}, "2026-10"), "chat:alice:s1")
    (sealed_old,) = await before.encode([plain("october")])
    after = for_workflow(EncryptionCodec({"2026-10": old, "2026-11": new}, "2026-11"), "w")
    (sealed_new,) = await after.encode([plain("november")])
    assert sealed_new.metadata["encryption-key-id"] == b"2026-11"
    assert await after.decode([sealed_old, sealed_new]) == [plain("october"), plain("november")]
    with pytest.raises(EncryptionKeyError, match="not configured"):
        await before.decode([sealed_new])


def test_key_settings_are_checked() -> None:
    with pytest.raises(EncryptionKeyError, match="32 bytes"):
        parse_key("short", base64.b64encode(b"x" * 16).decode())
    with pytest.raises(EncryptionKeyError, match="base64"):
        parse_key("junk", "not base64 at all!")
    two = Settings(_env_file=None, encryption_keys={"a": new_key(), "b": new_key()})
    with pytest.raises(ValueError, match="CHAT_ENCRYPTION_KEY_ID"):
        two.current_encryption_key()
    assert two.model_copy(update={"encryption_key_id": "b"}).current_encryption_key() == "b"
    assert Settings(_env_file=None).current_encryption_key() is None


async def database_text_after_a_conversation(tmp: Path, **settings: Any) -> bytes:
    """Every byte the dev server wrote to its SQLite files for one conversation."""
    db = tmp / "temporal.db"
    env = await start_dev_env(dev_server_database_filename=str(db))
    try:
        environ = stack_env(env, f"tq-enc-{uuid.uuid4().hex[:8]}", **settings)
        with serving(environ) as gateway:
            alice = gateway.client()
            session_id = await new_session(
                alice, tools=["calculate"], system_prompt="pumpernickel-marmalade keeper"
            )
            content = "pumpernickel-marmalade " + tool_script(
                [("calculate", {"expression": "424242 + 1"})]
            )
            sent = await alice.post(
                f"/v1/sessions/{session_id}/messages", json={"content": content}
            )
            assert sent.status_code == 200, sent.text
            assert "424243" in sent.json()["reply"]["content"]
            history = await messages(alice, session_id)
            assert any("pumpernickel-marmalade" in m["content"] for m in history)
            await gateway.close_clients()
    finally:
        await env.shutdown()
    return read_files(tmp, db.name)


def read_files(folder: Path, prefix: str) -> bytes:
    """The database file with its -wal and -shm companions."""
    return b"".join(p.read_bytes() for p in folder.iterdir() if p.name.startswith(prefix))


async def test_the_temporal_database_holds_no_message_text(tmp_path: Path) -> None:
    for name in ("keyed", "clear"):
        (tmp_path / name).mkdir()
    keyed = await database_text_after_a_conversation(
        tmp_path / "keyed", encryption_keys={"k1": new_key()}
    )
    leaked = [m for m in MARKERS if m.encode() in keyed]
    assert not leaked, f"found in Temporal's SQLite file: {leaked}"
    clear = await database_text_after_a_conversation(tmp_path / "clear")
    assert all(m.encode() in clear for m in MARKERS), "control: without keys the text is there"
