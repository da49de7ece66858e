"""How many tokens each model takes: its context size and what is kept back for the reply.

Patterns are `provider/model` globs; the longest matching pattern wins, and the ones in
`CHAT_MODEL_WINDOWS` come before these defaults. An unknown model gets `FALLBACK_CONTEXT`,
which is small on purpose: a prompt that fits a small window fits a large one too.
"""

from fnmatch import fnmatchcase

from pydantic import BaseModel, Field

FALLBACK_CONTEXT = 8_192


class ModelWindow(BaseModel):
    context_tokens: int = Field(ge=256, description="The model's whole context: prompt + reply.")
    output_tokens: int | None = Field(
        default=None,
        ge=16,
        description="Kept back for the reply and sent as max_tokens; none: CHAT_MAX_OUTPUT_TOKENS.",
    )


DEFAULT_WINDOWS: dict[str, int] = {
    "openai/gpt-4o*": 128_000,
    "openai/gpt-4.1*": 1_047_576,
    "openai/gpt-5*": 400_000,
    "openai/o1*": 200_000,
    "openai/o3*": 200_000,
    "openai/o4*": 200_000,
    "anthropic/claude-*": 200_000,
    "scripted/*": FALLBACK_CONTEXT,
}
"""Published context sizes of the models the project's providers commonly serve. `local/*`
is the llama.cpp context the worker opens (CHAT_LOCAL_CONTEXT_TOKENS)."""


def window_for(
    model: str,
    configured: dict[str, ModelWindow],
    *,
    local_context: int,
    output_tokens: int,
) -> tuple[int, int]:
    """(context tokens, reply tokens) for `model`; the prompt gets the difference."""
    for pattern in sorted(configured, key=len, reverse=True):
        if fnmatchcase(model, pattern):
            window = configured[pattern]
            return window.context_tokens, window.output_tokens or output_tokens
    if model.startswith("local/"):
        return local_context, output_tokens
    for pattern in sorted(DEFAULT_WINDOWS, key=len, reverse=True):
        if fnmatchcase(model, pattern):
            return DEFAULT_WINDOWS[pattern], output_tokens
    return FALLBACK_CONTEXT, output_tokens
