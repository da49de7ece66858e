"""`python -m cli`: chat with a durable session from the terminal.

    python -m cli chat [--session ID] [--system PROMPT] [--model MODEL] [--tools A,B]
                       [--no-stream]
    python -m cli sessions
    python -m cli history ID

`chat` prints the reply as it is generated, shows tool calls and their results, and asks
y/n before a tool that needs approval runs. The gateway URL and API key come from
--url/--key or CHAT_GATEWAY_URL/CHAT_API_KEY.
"""

import argparse
import os
import sys
from collections.abc import Callable
from contextlib import closing
from typing import Any, TextIO

import httpx

from cli.client import Gateway, GatewayError
from cli.sse import ServerEvent

EXIT_WORDS = {"exit", "quit", "/exit", "/quit"}
NOTE_CHARS = 200  # tool arguments and results are cut to this on their one-line notes


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.key:
        print("no API key: pass --key or set CHAT_API_KEY (make run prints one)", file=sys.stderr)
        return 2
    gateway = Gateway(args.url, args.key)
    try:
        if args.command == "sessions":
            return _sessions(gateway)
        if args.command == "history":
            return _history(gateway, args.session_id)
        return _chat(gateway, args)
    except GatewayError as err:
        print(f"error {err}", file=sys.stderr)
        return 1
    except httpx.TransportError as err:
        print(f"cannot reach the gateway at {args.url}: {err}", file=sys.stderr)
        return 1
    finally:
        gateway.close()


def _chat(gateway: Gateway, args: argparse.Namespace) -> int:
    session_id = args.session
    if session_id is None:
        created = gateway.create_session(
            system_prompt=args.system, model=args.model, tools=args.tools
        )
        session_id = created["session_id"]
        tools = f", tools: {', '.join(created['tools'])}" if created.get("tools") else ""
        print(f"new session {session_id} ({created['model']}{tools})")
    else:
        status = gateway.status(session_id)
        print(f"session {session_id}: {status['status']}, {status['turns']} turns so far")
    print("Type a message; 'exit' to quit.")
    while True:
        try:
            line = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            break
        if not line:
            continue
        if line.lower() in EXIT_WORDS:
            break
        if args.no_stream:
            try:
                reply = gateway.send(session_id, line)["reply"]
            except GatewayError as err:
                print(f"error {err}")
                continue
            _print_reply(reply)
            continue
        printer = TurnPrinter(gateway, session_id)
        try:
            with closing(gateway.send_streaming(session_id, line)) as events:
                for event in events:
                    printer.show(event)
        except GatewayError as err:
            printer.note(f"error {err}")
        except KeyboardInterrupt:
            printer.note("[stopped watching; the reply will still be saved: see `history`]")
        printer.end_line()
    print(f"bye — resume with: python -m cli chat --session {session_id}")
    return 0


class TurnPrinter:
    """Shows one turn's events on a terminal as they arrive."""

    def __init__(
        self,
        gateway: Gateway,
        session_id: str,
        out: TextIO | None = None,
        ask: Callable[[str], str] = input,
    ) -> None:
        self._gateway = gateway
        self._session_id = session_id
        self._out = out or sys.stdout
        self._ask = ask
        self._text_step: int | None = None  # the step whose text is on the current line
        self._mid_line = False
        self._shown_steps: set[int] = set()  # steps with text on the terminal
        self._failed = False

    def show(self, event: ServerEvent) -> None:
        data = event.data
        if event.event == "delta":
            if self._text_step != data["step"]:
                self.end_line()
                self._write("assistant> ")
                self._text_step = data["step"]
            self._write(data["text"])
            self._mid_line = True
            self._shown_steps.add(data["step"])
        elif event.event == "restart":
            if data["step"] in self._shown_steps:  # else nothing to take back
                self._shown_steps.discard(data["step"])
                self.note("[model call retried, starting over]")
        elif event.event == "tool_call":
            self.note(f"[tool call] {data['name']} {_cut(data['arguments'])}")
            if data.get("needs_approval"):
                self._decide(data["id"], data["name"])
        elif event.event == "tool_result":
            kind = "tool error" if data.get("is_error") else "tool result"
            cut = " (truncated)" if data.get("truncated") else ""
            self.note(f"[{kind}] {data['name']}: {_cut(data['content'])}{cut}")
        elif event.event == "error":
            self._failed = True
            self.note(f"[turn failed] {data.get('detail')}")
        elif event.event == "turn_completed":
            if data.get("error") and not self._failed:
                self._failed = True
                self.note(f"[turn failed] {data['error']}")
            elif not self._shown_steps and not self._failed:
                self.note("assistant> (no text)")

    def note(self, line: str) -> None:
        """A line of its own, after any text on the current line."""
        self.end_line()
        self._write(line + "\n")

    def end_line(self) -> None:
        if self._mid_line:
            self._write("\n")
            self._mid_line = False
        self._text_step = None

    def _decide(self, call_id: str, name: str) -> None:
        while True:
            try:
                answer = self._ask(f"approve {name}? [y/n] ").strip().lower()
            except EOFError:
                answer = "n"  # nobody at the terminal to say yes
            if answer in ("y", "yes", "n", "no"):
                break
        approve = answer.startswith("y")
        try:
            self._gateway.decide(self._session_id, call_id, approve)
        except GatewayError as err:
            self.note(f"[decision not recorded] {err}")
            return
        self.note("[approved]" if approve else "[denied]")

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()


def _cut(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= NOTE_CHARS else line[: NOTE_CHARS - 3] + "..."


def _print_reply(reply: dict[str, Any]) -> None:
    if reply.get("error"):
        print(f"[turn failed] {reply['error']}")
    else:
        print(f"assistant> {reply['content']}")


def _sessions(gateway: Gateway) -> int:
    sessions = gateway.sessions()
    if not sessions:
        print("no sessions yet")
    for s in sessions:
        print(
            f"{s['session_id']}  {s['status']:<8} {s['model'] or '-':<20} started {s['started_at']}"
        )
    return 0


def _history(gateway: Gateway, session_id: str) -> int:
    for message in gateway.history(session_id):
        if message["role"] == "assistant" and message.get("error"):
            print(f"[{message['seq']}] assistant (failed): {message['error']}")
        else:
            print(f"[{message['seq']}] {message['role']}: {message['content']}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cli", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--url", default=os.environ.get("CHAT_GATEWAY_URL", "http://127.0.0.1:8000")
    )
    parser.add_argument("--key", default=os.environ.get("CHAT_API_KEY"))
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser("chat", help="chat in a new or existing session")
    chat.add_argument("--session", help="continue this session (even if it expired)")
    chat.add_argument("--system", help="system prompt for a new session")
    chat.add_argument("--model", help="provider/model for a new session")
    chat.add_argument(
        "--tools",
        type=lambda names: [n.strip() for n in names.split(",") if n.strip()],
        help="comma-separated tools the model may call in a new session (see GET /v1/tools)",
    )
    chat.add_argument(
        "--no-stream",
        action="store_true",
        help="wait for each whole reply instead of printing it as it is generated",
    )
    commands.add_parser("sessions", help="list your sessions")
    history = commands.add_parser("history", help="print a session's messages")
    history.add_argument("session_id")
    return parser


if __name__ == "__main__":
    sys.exit(main())
