"""The CLI against a real gateway: a chat typed on stdin, then `sessions` and `history`;
a chat on a pseudo-terminal that shows the reply as it is generated, asks before a tool
runs, moves between sessions with slash commands and renders markdown; the client's
reconnect when a stream breaks off."""

import asyncio
import fcntl
import io
import itertools
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from activities.providers.scripted import tool_script
from cli.__main__ import TurnPrinter
from cli.client import Gateway as Client
from cli.client import GatewayError
from cli.render import Renderer
from cli.sse import ServerEvent
from tests.processes import ALICE_KEY, Gateway, serving, stack_env


@pytest.fixture(scope="module")
def gateway(dev_env: WorkflowEnvironment) -> Iterator[Gateway]:
    environ = stack_env(
        dev_env, f"tq-cli-{uuid.uuid4().hex[:8]}", tool_modules=["tests.tool_fixtures"]
    )
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


async def test_no_stream_waits_for_the_whole_reply(gateway: Gateway) -> None:
    out = await cli(gateway, "chat", "--no-stream", stdin="hello there\n")
    assert "assistant> echo: hello there\n" in out


async def test_piped_markdown_stays_plain_text(gateway: Gateway) -> None:
    out = await cli(gateway, "chat", stdin="**bold** and `code`\n/history\n")
    assert "assistant> echo: **bold** and `code`\n" in out
    assert "[2] assistant: echo: **bold** and `code`\n" in out
    assert "\x1b" not in out


def _api(gateway: Gateway) -> httpx.Client:
    return httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {ALICE_KEY}"}, timeout=30
    )


def _contents(api: httpx.Client, session_id: str) -> list[str]:
    page = api.get(f"/v1/sessions/{session_id}/messages").raise_for_status().json()
    return [m["content"] for m in page["messages"]]


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.1)


def _listed(api: httpx.Client, *session_ids: str) -> bool:
    """Whether the list of sessions (eventually consistent) shows these as active."""
    sessions = api.get("/v1/sessions").raise_for_status().json()["sessions"]
    return {s["session_id"] for s in sessions if s["status"] == "active"} >= set(session_ids)


@dataclass
class Terminal:
    """`python -m cli` on a pseudo-terminal: what it printed, and when each part arrived.

    Echo is off unless asked for, so the screen holds only what the CLI wrote; carriage returns
    are dropped from `screen` (`raw` keeps them).
    """

    proc: subprocess.Popen[bytes]
    fd: int
    screen: bytearray = field(default_factory=bytearray)
    raw: bytearray = field(default_factory=bytearray)  # with carriage returns, for `shown`
    arrivals: list[tuple[int, float]] = field(default_factory=list)  # (screen length, when)
    read_to: int = 0  # `wait_for` looks after the last text it found

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def wait_for(self, text: str, timeout: float = 30) -> float:
        """When `text` (after the last text waited for) reached the terminal."""
        wanted = text.encode()
        deadline = time.monotonic() + timeout
        while (at := self.screen.find(wanted, self.read_to)) < 0:
            if not self._read(deadline - time.monotonic()):
                raise AssertionError(f"no {text!r} on the terminal; it shows:\n{self.text()}")
        self.read_to = at + len(wanted)
        return next(when for length, when in self.arrivals if length >= self.read_to)

    def text(self) -> str:
        return self.screen.decode(errors="replace")

    def shown(self) -> list[str]:
        """The lines a terminal would display now (ignoring scrolling): cursor-up and erase
        sequences applied, styles dropped, trailing blanks stripped."""
        lines: list[list[str]] = [[]]
        row = col = 0
        for m in _TERMINAL_OUTPUT.finditer(self.raw.decode(errors="replace")):
            piece, csi = m.group(0), m.group(2)
            lines += [[] for _ in range(row + 1 - len(lines))]
            if csi == "A":
                row = max(row - int(m.group(1) or 1), 0)
            elif csi == "J":
                del lines[row + 1 :]
                del lines[row][col:]
            elif piece.startswith("\x1b"):
                continue  # styles and the like
            elif piece == "\r":
                col = 0
            elif piece == "\n":
                row += 1
            else:
                if col == TERMINAL_COLUMNS:  # wraps when the next character comes
                    row, col = row + 1, 0
                    lines += [[] for _ in range(row + 1 - len(lines))]
                line = lines[row]
                line += [" "] * (col + 1 - len(line))
                line[col] = piece
                col += 1
        return ["".join(line).rstrip() for line in lines]

    def _read(self, timeout: float) -> bool:
        if timeout <= 0 or not select.select([self.fd], [], [], timeout)[0]:
            return False
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: the CLI exited and closed the terminal
            return False
        self.raw += chunk
        self.screen += chunk.replace(b"\r", b"")
        self.arrivals.append((len(self.screen), time.monotonic()))
        return bool(chunk)


TERMINAL_COLUMNS, TERMINAL_ROWS = 120, 40
_TERMINAL_OUTPUT = re.compile(  # a CSI sequence (cursor, erase, style), an OSC one, a character
    r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|.", re.S
)


@contextmanager
def terminal(
    gateway: Gateway, *args: str, term_type: str = "dumb", echo: bool = False
) -> Iterator[Terminal]:
    """`python -m cli *args` on a pseudo-terminal of TERMINAL_COLUMNS x TERMINAL_ROWS.

    TERM=dumb (the default) is a terminal without cursor movement or styles, so the CLI prints
    plain text; pass e.g. `term_type="xterm-256color"` to see markdown rendered. With `echo`,
    what is typed shows on the terminal too, as it does for a person."""
    main, child = os.openpty()
    if not echo:
        attrs = termios.tcgetattr(child)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(child, termios.TCSANOW, attrs)
    size = struct.pack("HHHH", TERMINAL_ROWS, TERMINAL_COLUMNS, 0, 0)
    fcntl.ioctl(child, termios.TIOCSWINSZ, size)
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as a user's
    environ |= {"CHAT_GATEWAY_URL": gateway.url, "CHAT_API_KEY": ALICE_KEY, "TERM": term_type}
    environ.pop("NO_COLOR", None)
    environ.pop("COLUMNS", None)
    environ.pop("LINES", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", *args], stdin=child, stdout=child, stderr=child, env=environ
    )
    os.close(child)
    term = Terminal(proc, main)
    try:
        yield term
        term.type("exit")
        term.wait_for("bye")
        assert proc.wait(timeout=10) == 0, term.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)


def test_chat_prints_tokens_as_they_arrive(gateway: Gateway) -> None:
    words = [f"w{i:02d}" for i in range(40)]
    with terminal(gateway, "chat") as term:
        term.wait_for("you> ")
        session_id = re.search(r"new session (\w+)", term.text())
        assert session_id, term.text()
        term.type("[[tok_delay=0.05]] " + " ".join(words))  # a word every 50 ms

        shown = [term.wait_for("assistant> echo: w00")]
        stored = httpx.get(
            f"{gateway.url}/v1/sessions/{session_id.group(1)}/messages",
            headers={"Authorization": f"Bearer {ALICE_KEY}"},
        ).json()["messages"]
        assert [m["role"] for m in stored] == ["user"], "the reply was still being generated"
        shown += [term.wait_for(f" {word}") for word in ("w10", "w20", "w30", "w39")]
        term.wait_for("\nyou> ")

    gaps = [later - earlier for earlier, later in itertools.pairwise(shown)]
    assert min(gaps) > 0.2, gaps  # ten words at 50 ms each: about 0.5 s apart
    assert "assistant> echo: " + " ".join(words) + "\n" in term.text()


def test_chat_asks_before_a_tool_that_needs_approval(gateway: Gateway) -> None:
    with terminal(gateway, "chat", "--tools", "send_note") as term:
        term.wait_for("tools: send_note)")
        term.wait_for("you> ")
        term.type("note " + tool_script([("send_note", {"text": "ship it"})]))
        term.wait_for('[tool call] send_note {"text": "ship it"}\napprove send_note? [y/n] ')
        term.type("y")
        term.wait_for("[approved]\n[tool result] send_note: sent: ship it\n")
        term.wait_for("assistant> echo: note [tools: sent: ship it]\nyou> ")

        term.type("again " + tool_script([("send_note", {"text": "not this"})]))
        term.wait_for("approve send_note? [y/n] ")
        term.type("maybe")
        term.wait_for("approve send_note? [y/n] ")  # asked again
        term.type("n")
        denied = "The user denied the call to 'send_note'; it did not run."
        term.wait_for(f"[denied]\n[tool error] send_note: {denied}\n")
        term.wait_for(f"assistant> echo: again [tools: error: {denied}]\nyou> ")


def test_slash_commands_list_switch_and_start_sessions(gateway: Gateway) -> None:
    api = _api(gateway)
    other = api.post("/v1/sessions", json={}).raise_for_status().json()["session_id"]
    api.post(f"/v1/sessions/{other}/messages", json={"content": "from before"}).raise_for_status()
    short = {"inactivity_timeout_seconds": 1}
    expired = api.post("/v1/sessions", json=short).raise_for_status().json()["session_id"]
    with terminal(gateway, "chat") as term:
        term.wait_for("you> ")
        first = re.search(r"new session (\w+)", term.text())
        assert first, term.text()
        _wait_until(lambda: _listed(api, first.group(1), other), "sessions listed as active")

        term.type("/sessions")
        start = term.read_to
        term.wait_for("/switch <number> continues one")
        listing = term.screen[start : term.read_to].decode()
        assert re.search(rf"^\* *\d+  {first.group(1)}  active ", listing, re.M), listing
        number = re.search(rf"^ +(\d+)  {other}  active +scripted/echo ", listing, re.M)
        assert number, listing
        term.type(f"/switch {number.group(1)}")
        term.wait_for(f"switched to session {other}: active, 1 turn so far\n")
        term.wait_for("[1] user: from before\n[2] assistant: echo: from before\nyou> ")
        term.type("after the switch")
        term.wait_for("assistant> echo: after the switch\nyou> ")
        assert _contents(api, other)[2:] == ["after the switch", "echo: after the switch"]
        assert _contents(api, first.group(1)) == []

        _wait_until(
            lambda: api.get(f"/v1/sessions/{expired}").json()["status"] == "expired",
            "the short session expired",
        )
        term.type(f"/switch {expired}")  # by id
        term.wait_for(f"switched to session {expired}: expired, 0 turns so far\n")
        term.wait_for("your next message resumes it, history and all)\n(no messages yet)\n")
        term.type("wake up")
        term.wait_for("assistant> echo: wake up\nyou> ")
        assert _contents(api, expired) == ["wake up", "echo: wake up"]

        term.type("/new be brief")
        term.wait_for("new session ")
        term.wait_for("you> ")
        new = re.findall(r"new session (\w+) \(scripted/echo\)", term.text())
        assert len(new) == 2 and new[0] == first.group(1), term.text()
        term.type("/history")
        term.wait_for("(no messages yet)\nyou> ")
        term.type("/frobnicate now")
        term.wait_for("unknown command /frobnicate: /help lists the commands")
        term.type("/help")
        term.wait_for("/switch <n or id>")
        term.type("//frobnicate is a word")
        term.wait_for("assistant> echo: /frobnicate is a word\nyou> ")
    assert api.get(f"/v1/sessions/{new[1]}").json()["system_prompt"] == "be brief"
    assert _contents(api, new[1]) == ["/frobnicate is a word", "echo: /frobnicate is a word"]
    assert f"bye — resume with: python -m cli chat --session {new[1]}" in term.text()


def test_markdown_is_rendered_on_a_terminal(gateway: Gateway) -> None:
    with terminal(gateway, "chat", term_type="xterm-256color", echo=True) as term:
        term.wait_for("you> ")
        term.type("plain words")
        term.wait_for("assistant> echo: plain words\nyou> ")
        term.type("**bold**, `code` and *slanted*")
        term.wait_for("assistant> echo: **bold**, `code` and *slanted*")  # streamed raw first
        term.wait_for("you> ")
        term.type("/history")
        term.wait_for("you> ")
    shown = term.shown()
    assert shown[2:8] == [
        "you> plain words",
        "assistant> echo: plain words",  # no markdown: left as streamed
        "you> **bold**, `code` and *slanted*",  # what was typed stays as typed
        "assistant> echo: bold, code and slanted",  # redrawn in place
        "you> /history",
        "[1] user: plain words",
    ], "\n".join(shown)
    assert "[3] user: **bold**, `code` and *slanted*" in shown
    assert "[4] assistant: echo: bold, code and slanted" in shown
    assert b"\x1b[1mbold\x1b[0m" in term.raw
    assert term.raw.count(b"\x1b[J") == 1  # only the reply with markdown was redrawn


@pytest.mark.parametrize("flag", ["--plain", "--no-stream"])
def test_plain_flag_and_no_stream_on_a_terminal(gateway: Gateway, flag: str) -> None:
    with terminal(gateway, "chat", flag, term_type="xterm-256color", echo=True) as term:
        term.wait_for("you> ")
        term.type("**bold** and `code`")
        term.wait_for("you> ")
    if flag == "--plain":
        assert "assistant> echo: **bold** and `code`" in term.shown()
        assert b"\x1b" not in term.raw
    else:  # a whole reply is printed rendered straight away
        assert "assistant> echo: bold and code" in term.shown()
        assert b"assistant> echo: **" not in term.raw


class CutFirstStream(httpx.BaseTransport):
    """Real HTTP, except that the first turn stream breaks off after `after_bytes`."""

    def __init__(self, after_bytes: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.after_bytes = after_bytes
        self.cut = False
        self.requests: list[tuple[str, str | None]] = []  # (method, Last-Event-ID)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/stream"):
            return response
        self.requests.append((request.method, request.headers.get("Last-Event-ID")))
        if self.cut:
            return response
        self.cut = True
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_BreaksOff(response.stream, self.after_bytes),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self.inner.close()


@dataclass
class _BreaksOff(httpx.SyncByteStream):
    inner: httpx.SyncByteStream | httpx.AsyncByteStream
    after_bytes: int

    def __iter__(self) -> Iterator[bytes]:
        assert isinstance(self.inner, httpx.SyncByteStream)
        sent = 0
        for chunk in self.inner:
            yield chunk
            sent += len(chunk)
            if sent >= self.after_bytes:
                raise httpx.RemoteProtocolError("connection cut by the test")

    def close(self) -> None:
        assert isinstance(self.inner, httpx.SyncByteStream)
        self.inner.close()


def test_a_broken_stream_is_resumed_without_repeats(gateway: Gateway) -> None:
    transport = CutFirstStream(after_bytes=600)  # turn_started and a few words
    client = Client(gateway.url, ALICE_KEY, transport=transport)
    try:
        session_id = client.create_session()["session_id"]
        words = " ".join(f"w{i:02d}" for i in range(30))
        events = list(client.send_streaming(session_id, "[[tok_delay=0.03]] " + words))
    finally:
        client.close()
    (first, again) = transport.requests
    assert first == ("POST", None)
    assert again[0] == "GET" and again[1] is not None
    ids = [e.id for e in events]
    assert len(set(ids)) == len(ids), "an event came twice"
    assert again[1] in ids[:-1]
    assert events[0].event == "turn_started"
    assert events[-1].event == "turn_completed"
    assert _text(events) == "echo: " + words


def _text(events: list[ServerEvent]) -> str:
    text = ""
    for event in events:
        if event.event == "restart":
            text = ""
        elif event.event == "delta":
            text += event.data["text"]
    return text


class Failing(httpx.BaseTransport):
    """Every turn stream answers 503, as a gateway that cannot reach Temporal."""

    def __init__(self) -> None:
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return httpx.Response(503, json={"detail": "Temporal is unavailable"})


def test_reconnects_are_bounded() -> None:
    transport = Failing()
    client = Client("http://gateway.invalid", "k", transport=transport, reconnect_delay=0)
    with pytest.raises(GatewayError, match=r"503: Temporal is unavailable \(gave up after 3"):
        list(client.send_streaming("s1", "hi", reconnects=3))
    assert transport.calls == 4


def test_a_turn_error_is_an_event_not_a_reconnect() -> None:
    body = "".join(
        f"id: 1.1.{phase}.0.0.0\nevent: {name}\ndata: {json.dumps(data)}\n\n"
        for phase, name, data in [
            (0, "turn_started", {"turn": 1, "message_id": "m1"}),
            (4, "error", {"status": 502, "detail": "the model failed"}),
            (5, "turn_completed", {"message_id": "r1", "error": "the model failed"}),
        ]
    )
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, content=body.encode(), headers={"content-type": "text/event-stream"}
        )
    )
    client = Client("http://gateway.invalid", "k", transport=transport, reconnect_delay=0)
    events = list(client.send_streaming("s1", "hi"))
    assert [e.event for e in events] == ["turn_started", "error", "turn_completed"]


def test_the_printer_shows_a_restart_and_a_failed_turn() -> None:
    screen = io.StringIO()
    printer = TurnPrinter(Client("http://gateway.invalid", "k"), "s1", out=screen)
    events: list[tuple[str, dict[str, Any]]] = [
        ("turn_started", {"turn": 1, "message_id": "m1"}),
        ("delta", {"step": 1, "attempt": 1, "text": "Hel"}),
        ("restart", {"step": 1, "attempt": 2}),
        ("delta", {"step": 1, "attempt": 2, "text": "Hello"}),
        ("tool_call", {"step": 1, "id": "c1", "name": "calculate", "arguments": '{"x": 1}'}),
        ("tool_result", {"step": 1, "call_id": "c1", "name": "calculate", "content": "2"}),
        ("error", {"status": 502, "detail": "the model is down"}),
        ("turn_completed", {"message_id": "r1", "error": "the model is down"}),
    ]
    for name, data in events:
        printer.show(ServerEvent(name, data))
    printer.end_line()
    assert screen.getvalue() == (
        "assistant> Hel\n"
        "[model call retried, starting over]\n"
        "assistant> Hello\n"
        '[tool call] calculate {"x": 1}\n'
        "[tool result] calculate: 2\n"
        "[turn failed] the model is down\n"
    )


def test_the_printer_redraws_a_reply_with_markdown_or_renders_it_below() -> None:
    """Redrawn in place when the raw reply is still all on the screen, else printed below."""
    screen = io.StringIO()
    renderer = Renderer(screen, size=(30, 10))
    printer = TurnPrinter(
        Client("http://gateway.invalid", "k"), "s1", out=screen, markdown=renderer
    )
    for text in ["no markdown here", "**two** rows: " + "x" * 20, "- item\n" * 9 + "- last"]:
        printer.show(ServerEvent("delta", {"step": 1, "attempt": 1, "text": text}))
        printer.end_line()
    _, plain, short, redrawn, tall = screen.getvalue().split("assistant> ")
    assert plain == "no markdown here\n"
    assert short == "**two** rows: " + "x" * 20 + "\r\x1b[1A\x1b[J"  # up a row, erase
    assert [line.rstrip() for line in redrawn.splitlines()] == [
        "two rows:",
        " " * 11 + "x" * 19,  # lined up after the label; a long word breaks, never gets cut
        " " * 11 + "x",
    ]
    lines = [line.rstrip() for line in tall.splitlines()]
    assert "\x1b" not in tall  # ten rows: its top may have scrolled off the screen
    assert lines[:10] == ["- item"] * 9 + ["- last"]
    assert lines[10].strip("─ ") == "rendered"
    assert [line for line in lines[11:] if line] == [" • item"] * 9 + [" • last"]
