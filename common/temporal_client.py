"""The one way every process connects to Temporal: same namespace, same data converter."""

import dataclasses
from collections.abc import Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import PydanticPayloadConverter, pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    ExternalStorage,
)
from temporalio.runtime import Runtime

from common.encryption import EncryptionCodec, parse_key
from common.payload_store import HANDOVER_KEY, HANDOVER_MIN_BYTES, FilePayloadStore, StoreSelector
from common.settings import Settings
from workflows.messages import SessionInput


class ChatPayloadConverter(PydanticPayloadConverter):
    """Pydantic JSON, with a run's hand-over (a `SessionInput` carrying state) marked so the
    payload store keeps it whatever its size."""

    def to_payloads(self, values: Sequence[Any]) -> list[Payload]:
        payloads = super().to_payloads(values)
        for value, payload in zip(values, payloads, strict=False):
            if isinstance(value, SessionInput) and value.carried is not None:
                payload.metadata[HANDOVER_KEY] = b"1"
        return payloads


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic payloads; sealed with AES-GCM when encryption keys are configured, failure
    messages included (they can quote a tool's output); payloads over the threshold kept in
    the payload store when one is configured. The SDK seals before it stores, so a stored
    payload is as sealed as one in history."""
    converter = dataclasses.replace(
        pydantic_data_converter, payload_converter_class=ChatPayloadConverter
    )
    current = settings.current_encryption_key()
    if current is not None:
        keys = {k: parse_key(k, v.get_secret_value()) for k, v in settings.encryption_keys.items()}
        converter = dataclasses.replace(
            converter,
            payload_codec=EncryptionCodec(keys, current),
            failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
        )
    if settings.payload_store_dir is not None:
        store = FilePayloadStore(settings.payload_store_dir)
        converter = dataclasses.replace(
            converter,
            external_storage=ExternalStorage(
                drivers=[store],
                driver_selector=StoreSelector(store, settings.payload_store_threshold_bytes),
                payload_size_threshold=min(
                    HANDOVER_MIN_BYTES, settings.payload_store_threshold_bytes
                ),
            ),
        )
    return converter


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
        runtime=runtime,
    )
