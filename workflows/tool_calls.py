"""What the model is told when a tool call does not run, and how a call is summarised.

Pure functions of recorded data, so the workflow can use them without breaking determinism.
"""

from workflows.messages import RecordedToolCall, ToolOutcome

SUMMARY_ARGUMENT_CHARS = 60


def denied_outcome(call: RecordedToolCall) -> ToolOutcome:
    if call.approval == "timed_out":
        text = f"The call to {call.name!r} was not approved in time and did not run."
    else:
        text = f"The user denied the call to {call.name!r}; it did not run."
    if call.decision_reason:
        text += f" Reason: {call.decision_reason}"
    return ToolOutcome(content=text, is_error=True)


def unavailable_outcome(name: str, available: list[str]) -> ToolOutcome:
    names = ", ".join(available) or "none"
    return ToolOutcome(
        content=f"Tool {name!r} is not available in this session. Available tools: {names}.",
        is_error=True,
    )


def short_arguments(arguments: str) -> str:
    """The arguments on one short line, for the Temporal UI's activity summary."""
    flat = " ".join(arguments.split())
    if len(flat) <= SUMMARY_ARGUMENT_CHARS:
        return flat
    return flat[: SUMMARY_ARGUMENT_CHARS - 1] + "…"
