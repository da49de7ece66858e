"""External payload storage: large payloads go to files, history keeps a reference.

`FilePayloadStore` is a `temporalio.converter.StorageDriver` over a directory. Each payload is
stored as one file named by the SHA-256 of the serialized `Payload`, so the claim that history
records is only that digest (a few hundred bytes with its envelope), and a file is never
rewritten: the same bytes have the same name. Files are written to a temporary name and
renamed, so a reader sees a whole file or none. Reading checks the digest, so a tampered or
truncated file is refused rather than decoded.

The SDK applies the payload codec before external storage (and retrieval before decoding), so
with encryption on a file holds the sealed payload, never plain text.

A run's hand-over (the state continue-as-new carries) goes to the store whatever its size, from
`HANDOVER_MIN_BYTES`: runs are kept short so an evicted session replays little, and a hand-over
inline would be written twice (the closing and the starting event) every few turns.
`common/temporal_client.py` marks it with `HANDOVER_KEY`, which `StoreSelector` looks for.

The directory must be shared by every process that reads or writes payloads of the same
sessions (gateway and workers): one host, or a shared filesystem. Files are never deleted here;
keep them as long as Temporal keeps the histories that refer to them.
"""

import asyncio
import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverSelectContext,
    StorageDriverStoreContext,
)

DRIVER_NAME = "chat-files"
CLAIM_KEY = "sha256"
HANDOVER_KEY = "chat-handover"  # payload metadata: a run's hand-over, stored whatever its size
HANDOVER_MIN_BYTES = 2048  # a smaller one stays inline (a reference costs about 500 bytes)
_DIGEST = re.compile(r"[0-9a-f]{64}")


class PayloadStoreError(RuntimeError):
    """A claim whose payload cannot be read back: missing, tampered with, or malformed."""


class FilePayloadStore(StorageDriver):
    """Content-addressed payload files under `directory` (`ab/abcdef…`, 256 subdirectories)."""

    def __init__(self, directory: Path) -> None:
        self._directory = Path(directory)

    @property
    def directory(self) -> Path:
        return self._directory

    def name(self) -> str:
        return DRIVER_NAME

    def type(self) -> str:
        return "chat-content-addressed-files"

    def path_of(self, digest: str) -> Path:
        return self._directory / digest[:2] / digest

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        blobs = [p.SerializeToString(deterministic=True) for p in payloads]
        digests = await asyncio.to_thread(self._write_all, blobs)
        return [StorageDriverClaim(claim_data={CLAIM_KEY: d}) for d in digests]

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        digests = [self._digest_of(claim) for claim in claims]
        return await asyncio.to_thread(lambda: [self._read(d) for d in digests])

    def _write_all(self, blobs: list[bytes]) -> list[str]:
        return [self._write(blob) for blob in blobs]

    def _write(self, blob: bytes) -> str:
        digest = hashlib.sha256(blob).hexdigest()
        path = self.path_of(digest)
        if path.exists():
            return digest  # same name, same bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{digest[:8]}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(blob)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return digest

    def _read(self, digest: str) -> Payload:
        path = self.path_of(digest)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise PayloadStoreError(
                f"externally stored payload sha256={digest} is missing from the payload store "
                f"(CHAT_PAYLOAD_STORE_DIR): was the directory shared with every process and kept?"
            ) from None
        actual = hashlib.sha256(blob).hexdigest()
        if actual != digest:
            raise PayloadStoreError(
                f"externally stored payload sha256={digest} does not match its file "
                f"(its content hashes to {actual}): the file was changed or damaged"
            )
        return Payload.FromString(blob)

    @staticmethod
    def _digest_of(claim: StorageDriverClaim) -> str:
        digest = claim.claim_data.get(CLAIM_KEY, "")
        if not _DIGEST.fullmatch(digest):
            raise PayloadStoreError(f"malformed payload store claim {dict(claim.claim_data)!r}")
        return digest


@dataclass(frozen=True)
class StoreSelector:
    """Which payloads go to `store`: those of `threshold` bytes or more, and hand-overs.

    The SDK asks only about payloads of its own threshold or more, which is set to
    `HANDOVER_MIN_BYTES` (common/temporal_client.py)."""

    store: StorageDriver
    threshold: int

    def __call__(
        self, context: StorageDriverSelectContext, payload: Payload
    ) -> StorageDriver | None:
        if HANDOVER_KEY in payload.metadata or payload.ByteSize() >= self.threshold:
            return self.store
        return None
