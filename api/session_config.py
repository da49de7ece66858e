"""A new or resumed session's configuration: the deployment's settings plus what the caller
chose (already checked), built in one place for every route that starts a session."""

from common.settings import Settings
from workflows.messages import SessionConfig


def session_config(settings: Settings, model: str, **chosen: object) -> SessionConfig:
    values: dict[str, object] = {
        "model": model,
        "inactivity_timeout_seconds": settings.default_inactivity_timeout_seconds,
        "max_turns_per_run": settings.turns_per_run(),
        "max_tool_steps": settings.max_tool_steps,
        "approval_timeout_seconds": settings.tool_approval_timeout_seconds,
        "max_messages": settings.max_messages_per_session,
        "carry_max_chars": settings.carry_max_chars,
        "compaction": settings.compaction_enabled,
        "compaction_model": settings.compaction_model,
        "compaction_threshold": settings.compaction_threshold,
    }
    return SessionConfig.model_validate({**values, **chosen})
