"""Builds providers lazily from settings and keeps one of each per worker process."""

import asyncio

from activities.providers.base import ChatProvider, ProviderError
from common.settings import Settings


class ProviderRegistry:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._providers: dict[str, ChatProvider] = {}
        self._lock = asyncio.Lock()

    async def get(self, provider: str) -> ChatProvider:
        async with self._lock:
            if provider not in self._providers:
                self._providers[provider] = self._build(provider)
            return self._providers[provider]

    def _build(self, provider: str) -> ChatProvider:
        s = self._settings
        if provider not in s.available_providers():
            raise ProviderError(
                f"provider {provider!r} is not configured on this worker", status=400
            )
        if provider == "openai":
            from activities.providers.openai_compat import OpenAICompatibleProvider

            assert s.openai_base_url is not None
            return OpenAICompatibleProvider(
                base_url=s.openai_base_url,
                api_key=s.openai_api_key.get_secret_value() if s.openai_api_key else None,
                timeout=s.provider_timeout_seconds,
            )
        if provider == "anthropic":
            from activities.providers.anthropic import AnthropicProvider

            assert s.anthropic_api_key is not None
            return AnthropicProvider(
                base_url=s.anthropic_base_url,
                api_key=s.anthropic_api_key.get_secret_value(),
                timeout=s.provider_timeout_seconds,
            )
        if provider == "scripted":
            from activities.providers.scripted import ScriptedProvider

            return ScriptedProvider()
        from activities.providers.llamacpp import LlamaCppProvider

        return LlamaCppProvider(
            model_path=s.local_model_path,
            n_ctx=s.local_context_tokens,
            n_threads=s.local_threads,
        )

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        self._providers.clear()
