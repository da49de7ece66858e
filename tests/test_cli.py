"""The CLI against a real gateway: a chat typed on stdin, then `sessions` and `history`."""

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.processes import ALICE_KEY, Gateway, serving, stack_env


@pytest.fixture(scope="module")
def gateway(dev_env: WorkflowEnvironment) -> Iterator[Gateway]:
    environ = stack_env(dev_env, f"tq-cli-{uuid.uuid4().hex[:8]}")
    with serving(environ) as gw:
        yield gw


async def cli(gateway: Gateway, *args: str, stdin: str = "") -> str:
    environ = {**os.environ, "CHAT_GATEWAY_URL": gateway.url, "CHAT_API_KEY": ALICE_KEY}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli", *args],
        input=stdin.encode(),
        env=environ,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def test_chat_then_list_then_history(gateway: Gateway) -> None:
    out = await cli(gateway, "chat", "--system", "be kind", stdin="hello\n\nhow are you?\nexit\n")
    session_id = re.search(r"new session (\w+)", out)
    assert session_id, out
    assert "assistant> echo: hello" in out
    assert "assistant> echo: how are you?" in out
    sid = session_id.group(1)

    again = await cli(gateway, "chat", "--session", sid, stdin="one more\n")
    assert "2 turns so far" in again
    assert "assistant> echo: one more" in again

    for _ in range(50):
        if sid in await cli(gateway, "sessions"):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("session not listed")

    history = await cli(gateway, "history", sid)
    assert history.splitlines() == [
        "[1] user: hello",
        "[2] assistant: echo: hello",
        "[3] user: how are you?",
        "[4] assistant: echo: how are you?",
        "[5] user: one more",
        "[6] assistant: echo: one more",
    ]


def test_errors_are_readable(gateway: Gateway) -> None:
    environ = {**os.environ, "CHAT_GATEWAY_URL": gateway.url, "CHAT_API_KEY": "nope"}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "sessions"], env=environ, capture_output=True, timeout=30
    )
    assert done.returncode == 1
    assert "401: unknown API key" in done.stderr.decode()
