"""The one way every process connects to Temporal: same namespace, same data converter."""

import dataclasses

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

from common.encryption import EncryptionCodec, parse_key
from common.settings import Settings


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic payloads; sealed with AES-GCM when encryption keys are configured, failure
    messages included (they can quote a tool's output)."""
    current = settings.current_encryption_key()
    if current is None:
        return pydantic_data_converter
    keys = {k: parse_key(k, v.get_secret_value()) for k, v in settings.encryption_keys.items()}
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keys, current),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings),
    )
