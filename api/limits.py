"""Checks of user-controlled sizes against settings, before anything reaches Temporal."""

from api.errors import ApiError
from common.settings import Settings, split_model
from tools.registry import ToolRegistry


def check_content(settings: Settings, content: str) -> None:
    if not content.strip():
        raise ApiError(422, "content must not be empty")
    if len(content) > settings.max_message_chars:
        raise ApiError(
            413,
            f"content is {len(content)} characters; the limit is {settings.max_message_chars}",
        )


def check_system_prompt(settings: Settings, prompt: str | None) -> None:
    if prompt is not None and len(prompt) > settings.max_system_prompt_chars:
        raise ApiError(
            413,
            f"system_prompt is {len(prompt)} characters; "
            f"the limit is {settings.max_system_prompt_chars}",
        )


def check_timeout(settings: Settings, seconds: int | None) -> int:
    if seconds is None:
        return settings.default_inactivity_timeout_seconds
    if not 1 <= seconds <= settings.max_inactivity_timeout_seconds:
        raise ApiError(
            422,
            "inactivity_timeout_seconds must be between 1 and "
            f"{settings.max_inactivity_timeout_seconds}",
        )
    return seconds


def check_model(settings: Settings, model: str | None) -> str:
    model = model or settings.default_model
    try:
        provider, _ = split_model(model)
    except ValueError as err:
        raise ApiError(422, str(err)) from err
    available = settings.available_providers()
    if provider not in available:
        raise ApiError(
            422,
            f"provider {provider!r} is not configured here; available: "
            + ", ".join(sorted(available)),
        )
    return model


def check_tools(settings: Settings, registry: ToolRegistry, names: list[str]) -> list[str]:
    """The session's tool names, de-duplicated in order; unknown names are refused by name."""
    unique = list(dict.fromkeys(names))
    if len(unique) > settings.max_tools_per_session:
        raise ApiError(
            422, f"{len(unique)} tools named; a session may have {settings.max_tools_per_session}"
        )
    unknown = [name for name in unique if name not in registry]
    if unknown:
        available = ", ".join(registry.names()) or "none"
        raise ApiError(
            422,
            f"unknown tools: {', '.join(unknown)}; available: {available} (GET /v1/tools)",
        )
    return unique
