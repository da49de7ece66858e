"""`python -m cli`: chat with a durable session from the terminal.

    python -m cli chat [--session ID] [--system PROMPT] [--model MODEL]
    python -m cli sessions
    python -m cli history ID

The gateway URL and API key come from --url/--key or CHAT_GATEWAY_URL/CHAT_API_KEY.
"""

import argparse
import os
import sys
from typing import Any

import httpx

from cli.client import Gateway, GatewayError

EXIT_WORDS = {"exit", "quit", "/exit", "/quit"}


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


def _chat(gateway: Gateway, args: argparse.Namespace) -> int:
    session_id = args.session
    if session_id is None:
        created = gateway.create_session(system_prompt=args.system, model=args.model)
        session_id = created["session_id"]
        print(f"new session {session_id} ({created['model']})")
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
        try:
            reply = gateway.send(session_id, line)["reply"]
        except GatewayError as err:
            print(f"error {err}")
            continue
        _print_reply(reply)
    print(f"bye — resume with: python -m cli chat --session {session_id}")
    return 0


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
    commands.add_parser("sessions", help="list your sessions")
    history = commands.add_parser("history", help="print a session's messages")
    history.add_argument("session_id")
    return parser


if __name__ == "__main__":
    sys.exit(main())
