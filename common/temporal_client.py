"""The one way every process connects to Temporal: same namespace, same data converter."""

import dataclasses

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    ExternalStorage,
)
from temporalio.runtime import Runtime

from common.encryption import EncryptionCodec, parse_key
from common.payload_store import FilePayloadStore
from common.settings import Settings


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic payloads; sealed with AES-GCM when encryption keys are configured, failure
    messages included (they can quote a tool's output); payloads over the threshold kept in
    the payload store when one is configured. The SDK seals before it stores, so a stored
    payload is as sealed as one in history."""
    converter = pydantic_data_converter
    current = settings.current_encryption_key()
    if current is not None:
        keys = {k: parse_key(k, v.get_secret_value()) for k, v in settings.encryption_keys.items()}
        converter = dataclasses.replace(
            converter,
            payload_codec=EncryptionCodec(keys, current),
            failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
        )
    if settings.payload_store_dir is not None:
        converter = dataclasses.replace(
            converter,
            external_storage=ExternalStorage(
                drivers=[FilePayloadStore(settings.payload_store_dir)],
                payload_size_threshold=settings.payload_store_threshold_bytes,
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
