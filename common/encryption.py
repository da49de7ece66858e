"""Payload encryption: what Temporal stores of a session is ciphertext without the key.

Every payload the gateway and the worker hand to Temporal (messages, tool arguments and
results, queries' answers, failure messages) passes through `EncryptionCodec`: AES-256-GCM with
a fresh nonce per payload, under the current key. Keys have ids; a payload names the key that
sealed it, so after a rotation (a new current key, old keys kept) old history stays readable.

The workflow id travels beside the ciphertext in plain metadata and is bound to it as GCM
associated data: changing it breaks decryption. That is what lets the codec endpoint decrypt a
payload only for the owner of the session it belongs to (`common/ids.py`: the id names the owner).
"""

import base64
import binascii
import os
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec, SerializationContext, WithSerializationContext

from common.payload_store import HANDOVER_KEY

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
WORKFLOW_ID = "chat-workflow-id"
NONCE_BYTES = 12
KEY_BYTES = 32


class EncryptionKeyError(ValueError):
    """A key setting that cannot be used, or a payload sealed with a key this process lacks."""


def parse_key(key_id: str, encoded: str) -> bytes:
    """A key from settings: 32 bytes, base64 (standard or URL-safe)."""
    try:
        raw = base64.urlsafe_b64decode(encoded.replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError) as err:
        raise EncryptionKeyError(f"encryption key {key_id!r} is not base64") from err
    if len(raw) != KEY_BYTES:
        raise EncryptionKeyError(
            f"encryption key {key_id!r} must be {KEY_BYTES} bytes, got {len(raw)}"
        )
    return raw


def new_key() -> str:
    """A fresh key in the form settings take (what `make run` generates)."""
    return base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode()


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    def __init__(
        self, keys: Mapping[str, bytes], current: str, workflow_id: str | None = None
    ) -> None:
        if current not in keys:
            raise EncryptionKeyError(f"the current encryption key {current!r} is not a key")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._keys = dict(keys)
        self._current = current
        self._workflow_id = workflow_id

    def with_context(self, context: SerializationContext) -> "EncryptionCodec":
        workflow_id = getattr(context, "workflow_id", None)
        if workflow_id == self._workflow_id:
            return self
        codec = EncryptionCodec.__new__(EncryptionCodec)
        codec._ciphers, codec._keys, codec._current = self._ciphers, self._keys, self._current
        codec._workflow_id = workflow_id
        return codec

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.seal(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.open(p) for p in payloads]

    def seal(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        bound = (self._workflow_id or "").encode()
        sealed = self._ciphers[self._current].encrypt(nonce, payload.SerializeToString(), bound)
        metadata = {"encoding": ENCODING, KEY_ID: self._current.encode()}
        if self._workflow_id:
            metadata[WORKFLOW_ID] = bound
        if HANDOVER_KEY in payload.metadata:  # sealed, it must still reach the payload store
            metadata[HANDOVER_KEY] = payload.metadata[HANDOVER_KEY]
        return Payload(metadata=metadata, data=nonce + sealed)

    def open(self, payload: Payload) -> Payload:
        """The payload as it was before `seal`; a payload that was never sealed passes as is
        (history written before encryption was turned on stays readable)."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID, b"").decode()
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise EncryptionKeyError(f"payload sealed with key {key_id!r}, which is not configured")
        bound = payload.metadata.get(WORKFLOW_ID, b"")
        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], bound)
        except InvalidTag as err:
            raise EncryptionKeyError("payload failed authentication (tampered?)") from err
        return Payload.FromString(plain)


def sealed_for(payload: Payload) -> str | None:
    """The workflow id a sealed payload belongs to (None if unsealed or sealed without one)."""
    if payload.metadata.get("encoding") != ENCODING:
        return None
    bound = payload.metadata.get(WORKFLOW_ID)
    return bound.decode() if bound else None
