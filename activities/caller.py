"""The session run that scheduled the current activity.

Taken from the activity's own info rather than its input: a turn's input is written to
history on every turn, and the workflow and run ids would be about 100 bytes of each.
"""

from dataclasses import dataclass

from temporalio import activity
from temporalio.exceptions import ApplicationError


@dataclass(frozen=True)
class CallingRun:
    workflow_id: str
    run_id: str


def calling_run() -> CallingRun:
    """The workflow run that scheduled this activity."""
    info = activity.info()
    if not info.workflow_id or not info.workflow_run_id:
        raise ApplicationError(
            f"{info.activity_type} runs only for a chat session workflow",
            type="NotForSession",
            non_retryable=True,
        )
    return CallingRun(info.workflow_id, info.workflow_run_id)
