"""`python -m cli`: chat with a durable session from the terminal.

    python -m cli chat [--session ID] [--system PROMPT] [--model MODEL] [--tools A,B]
                       [--no-stream] [--plain]
    python -m cli sessions
    python -m cli history ID [--plain]

`chat` prints the reply as it is generated, shows tool calls and their results, and asks
y/n before a tool that needs approval runs. Inside it, /sessions, /switch, /new and
/history move between sessions (/help lists them). On a terminal, a reply that uses
markdown is redrawn rendered once it is complete (`--plain` turns that off); piped output
is always plain text. The gateway URL and API key come from --url/--key or
CHAT_GATEWAY_URL/CHAT_API_KEY.
"""

import argparse
import os
import sys
from collections.abc import Callable
from contextlib import closing
from datetime import datetime
from typing import Any, TextIO

import httpx

from cli.client import Gateway, GatewayError
from cli.render import Renderer, has_markdown
from cli.sse import ServerEvent

EXIT_WORDS = {"exit", "quit", "/exit", "/quit"}
NOTE_CHARS = 200  # tool arguments and results are cut to this on their one-line notes
CONTEXT_MESSAGES = 4  # messages shown when picking up a session


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
            return _history(gateway, args.session_id, args.plain)
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
    return Chat(gateway, args, Renderer.for_output(sys.stdout, args.plain)).run()


HELP = """\
/sessions             list your sessions, numbered
/switch <n or id>     continue another session (n: its number in /sessions)
/new [system prompt]  start a new session (with this chat's --model and --tools)
/history              this session's messages
/help                 this list
exit                  quit; the session stays (resume: python -m cli chat --session ID)
//text                send a message that starts with a slash"""


class Chat:
    """The interactive loop: messages go to the current session, slash commands do the rest."""

    def __init__(self, gateway: Gateway, args: argparse.Namespace, md: Renderer | None) -> None:
        self._gateway = gateway
        self._args = args
        self._md = md
        self._session_id = ""
        self._listed: list[str] = []  # session ids of the last /sessions, numbered from 1

    def run(self) -> int:
        if self._args.session is None:
            self._new(self._args.system)
        else:
            self._open(self._args.session, "session")
        print("Type a message; /help for commands, 'exit' to quit.")
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
            if line.startswith("//"):
                line = line[1:]
            elif line.startswith("/"):
                try:
                    self._command(line)
                except GatewayError as err:
                    print(f"error {err}")
                except KeyboardInterrupt:
                    print("[interrupted]")
                continue
            self._send(line)
        print(f"bye — resume with: python -m cli chat --session {self._session_id}")
        return 0

    def _send(self, line: str) -> None:
        if self._args.no_stream:
            try:
                reply = self._gateway.send(self._session_id, line)["reply"]
            except GatewayError as err:
                print(f"error {err}")
                return
            _print_reply(reply, self._md)
            return
        printer = TurnPrinter(self._gateway, self._session_id, markdown=self._md)
        try:
            with closing(self._gateway.send_streaming(self._session_id, line)) as events:
                for event in events:
                    printer.show(event)
        except GatewayError as err:
            printer.note(f"error {err}")
        except KeyboardInterrupt:
            printer.end_line(render=False)
            printer.note("[stopped watching; the reply will still be saved: see /history]")
        printer.end_line()

    def _command(self, line: str) -> None:
        name, _, rest = line.partition(" ")
        name, rest = name.lower(), rest.strip()
        if name == "/sessions":
            self._sessions()
        elif name == "/switch":
            target = self._target(rest)
            if target is not None:
                self._open(target, "switched to session")
        elif name == "/new":
            self._new(rest or None)
        elif name == "/history":
            _print_messages(self._gateway.history(self._session_id), self._md)
        elif name == "/help":
            print(HELP)
        else:
            print(f"unknown command {name}: /help lists the commands; //text sends /text")

    def _new(self, system_prompt: str | None) -> None:
        created = self._gateway.create_session(
            system_prompt=system_prompt, model=self._args.model, tools=self._args.tools
        )
        self._session_id = created["session_id"]
        tools = f", tools: {', '.join(created['tools'])}" if created.get("tools") else ""
        print(f"new session {self._session_id} ({created['model']}{tools})")

    def _open(self, session_id: str, intro: str) -> None:
        """Make `session_id` the current session and show where it left off."""
        status = self._gateway.status(session_id)
        self._session_id = session_id
        turns = status["turns"]
        print(f"{intro} {session_id}: {status['status']}, {turns} turn{'s'[: turns != 1]} so far")
        if status["status"] in ("expired", "ended"):
            print(f"  (it has {status['status']}; your next message resumes it, history and all)")
        earlier = max(status["messages"] - CONTEXT_MESSAGES, 0)
        if earlier:
            print(f"  ... {earlier} earlier message{'s'[: earlier != 1]} (/history shows all)")
        _print_messages(self._gateway.history(session_id, after=earlier), self._md)

    def _sessions(self) -> None:
        sessions = self._gateway.sessions()
        self._listed = [s["session_id"] for s in sessions]
        if not sessions:
            print("no sessions yet")
            return
        for number, s in enumerate(sessions, 1):
            mark = "*" if s["session_id"] == self._session_id else " "
            print(
                f"{mark}{number:>3}  {s['session_id']}  {s['status']:<17} "
                f"{s['model'] or '-':<20} started {_when(s['started_at'])}"
            )
        print("/switch <number> continues one (* is this one)")

    def _target(self, ref: str) -> str | None:
        """The session id `ref` names: a number from the last /sessions, or an id."""
        if not ref:
            print("usage: /switch <number from /sessions, or a session id>")
            return None
        if ref.isdigit() and 1 <= int(ref) <= len(self._listed or self._list()):
            return self._listed[int(ref) - 1]
        return ref

    def _list(self) -> list[str]:
        self._listed = [s["session_id"] for s in self._gateway.sessions()]
        return self._listed


class TurnPrinter:
    """Shows one turn's events on a terminal as they arrive."""

    def __init__(
        self,
        gateway: Gateway,
        session_id: str,
        out: TextIO | None = None,
        ask: Callable[[str], str] = input,
        markdown: Renderer | None = None,
    ) -> None:
        self._gateway = gateway
        self._session_id = session_id
        self._out = out or sys.stdout
        self._ask = ask
        self._markdown = markdown
        self._text = ""  # the text on the current line(s), since "assistant> "
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
            self._text += data["text"]
            self._mid_line = True
            self._shown_steps.add(data["step"])
        elif event.event == "restart":
            if data["step"] in self._shown_steps:  # else nothing to take back
                self._shown_steps.discard(data["step"])
                self.end_line(render=False)  # the retry's text replaces it
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

    def end_line(self, render: bool = True) -> None:
        """Finish the current line; on a terminal, text that uses markdown is redrawn rendered."""
        if self._mid_line:
            if render and self._markdown is not None and has_markdown(self._text):
                self._out.flush()
                self._markdown.redraw("assistant> ", self._text)
            else:
                self._write("\n")
            self._mid_line = False
        self._text_step = None
        self._text = ""

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


def _print_reply(reply: dict[str, Any], md: Renderer | None) -> None:
    if reply.get("error"):
        print(f"[turn failed] {reply['error']}")
    elif md is not None and has_markdown(reply["content"]):
        md.block("assistant>", reply["content"])
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


def _history(gateway: Gateway, session_id: str, plain: bool) -> int:
    _print_messages(gateway.history(session_id), Renderer.for_output(sys.stdout, plain))
    return 0


def _print_messages(messages: list[dict[str, Any]], md: Renderer | None) -> None:
    if not messages:
        print("(no messages yet)")
    for message in messages:
        seq, role, content = message["seq"], message["role"], message["content"]
        if role == "assistant" and message.get("error"):
            print(f"[{seq}] assistant (failed): {message['error']}")
        elif role == "tool":
            kind = "tool error" if message.get("is_error") else "tool"
            print(f"[{seq}] {kind} {message.get('tool_name')}: {content}")
        elif role == "assistant" and md is not None and has_markdown(content):
            md.block(f"[{seq}] assistant:", content)
        elif content or not message.get("tool_calls"):
            print(f"[{seq}] {role}: {content}")
        for call in message.get("tool_calls") or []:
            print(f"[{seq}] {role}: [tool call] {call['name']} {_cut(call['arguments'])}")


def _when(timestamp: str) -> str:
    """An API timestamp in local time, to the minute."""
    try:
        return datetime.fromisoformat(timestamp).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return timestamp


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
    for command in (chat, history):
        command.add_argument(
            "--plain",
            action="store_true",
            help="print markdown as it is, never rendered (it is only rendered on a terminal)",
        )
    return parser


if __name__ == "__main__":
    sys.exit(main())
