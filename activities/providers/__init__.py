"""Model providers behind one interface; a session names its model as `provider/model`."""

from activities.providers.base import (
    ChatProvider,
    ProviderError,
    ProviderReply,
    ProviderRequest,
)
from activities.providers.registry import ProviderRegistry
from common.settings import split_model

__all__ = [
    "ChatProvider",
    "ProviderError",
    "ProviderRegistry",
    "ProviderReply",
    "ProviderRequest",
    "split_model",
]
