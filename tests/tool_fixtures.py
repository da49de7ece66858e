"""Tools for tests, loaded like a user's own tool module (`CHAT_TOOL_MODULES`).

`step` appends to the file named by `CHAT_TEST_TOOL_LOG`, so a test can count executions
across worker processes, including one killed with SIGKILL.
"""

import asyncio
import os
from collections import defaultdict

from pydantic import BaseModel, Field

from tools import ToolContext, ToolError, tool

SENT_NOTES: list[tuple[str, str]] = []  # (text, idempotency key) of each send_note run
_ARRIVED: defaultdict[str, int] = defaultdict(int)
_GATHERED: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)


class Nothing(BaseModel):
    pass


class Meeting(BaseModel):
    group: str = Field(description="Calls with the same group wait for each other.")
    size: int = Field(default=2, ge=1, le=10)


class Note(BaseModel):
    text: str


class Step(BaseModel):
    n: int
    seconds: float = Field(default=0.0, ge=0, le=60)


class Size(BaseModel):
    chars: int = Field(ge=0, le=1_000_000)


@tool(description="Always fails, as a broken backend would.")
async def always_fails(args: Nothing) -> str:
    raise ToolError("the backend is down")


@tool(description="Returns once `size` calls of the group have arrived (at most 5 s).")
async def rendezvous(args: Meeting) -> str:
    _ARRIVED[args.group] += 1
    if _ARRIVED[args.group] >= args.size:
        _GATHERED[args.group].set()
    try:
        await asyncio.wait_for(_GATHERED[args.group].wait(), timeout=5)
    except TimeoutError as exc:
        raise ToolError(f"only {_ARRIVED[args.group]} of {args.size} calls arrived") from exc
    return f"met {args.group}"


@tool(description="Sends a note to the team.", needs_approval=True)
async def send_note(args: Note, context: ToolContext) -> str:
    SENT_NOTES.append((args.text, context.idempotency_key))
    return f"sent: {args.text}"


@tool(description="One step of a slow job; logged to CHAT_TEST_TOOL_LOG.", timeout_seconds=60)
async def step(args: Step, context: ToolContext) -> str:
    _log(f"start {args.n} {context.idempotency_key}")
    await asyncio.sleep(args.seconds)
    _log(f"done {args.n}")
    return f"step {args.n} done"


def _log(line: str) -> None:
    path = os.environ.get("CHAT_TEST_TOOL_LOG")
    if path:
        with open(path, "a") as f:  # one short line: not worth a thread
            f.write(line + "\n")


@tool(description="Returns `chars` characters of text.")
async def big_output(args: Size) -> str:
    return "x" * args.chars
