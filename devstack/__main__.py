"""`python -m devstack` (what `make run` calls): the whole service on embedded defaults.

Starts the Temporal dev server (SQLite file under .data/, Web UI, search attributes), one
worker and the gateway; prints the URLs and a development API key; Ctrl-C stops everything.
State lives in .data/, so starting again keeps every session.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from common.settings import get_settings
from devstack.server import FAST_SERVER_ARGS, binary, search_attribute_args

DATA = Path(".data")
TEMPORAL_PORT = 7233
UI_PORT = 8233
# Closed sessions stay resumable for as long as Temporal keeps them (the namespace retention).
RETENTION = "8760h"


def main() -> int:
    # Ctrl-C and SIGTERM both stop the stack in order (even when started in the background,
    # where a shell would otherwise leave SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    DATA.mkdir(exist_ok=True)
    env = dict(os.environ)
    key = _dev_api_key(env)
    settings = get_settings()
    temporal = binary("temporal")
    address = f"127.0.0.1:{TEMPORAL_PORT}"
    env.setdefault("CHAT_TEMPORAL_ADDRESS", address)
    env.setdefault("CHAT_TEMPORAL_UI_URL", f"http://localhost:{UI_PORT}")

    procs: list[subprocess.Popen[bytes]] = []
    try:
        server_log = (DATA / "temporal.log").open("ab")
        procs.append(
            subprocess.Popen(
                [
                    str(temporal),
                    "server",
                    "start-dev",
                    "--db-filename",
                    str(DATA / "temporal.db"),
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(TEMPORAL_PORT),
                    "--ui-port",
                    str(UI_PORT),
                    "--log-level",
                    "warn",
                    *search_attribute_args(),
                    *FAST_SERVER_ARGS,
                ],
                stdout=server_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        _wait_for_port(TEMPORAL_PORT, procs[0], "Temporal dev server")
        subprocess.run(
            [
                str(temporal),
                "operator",
                "namespace",
                "update",
                "--address",
                address,
                "-n",
                settings.temporal_namespace,
                "--retention",
                RETENTION,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        procs.append(_spawn("worker", env))
        procs.append(_spawn("api", env))
        _wait_for_port(settings.gateway_port, procs[-1], "gateway")
        _banner(key, settings.gateway_port)
        while procs[0].poll() is None and procs[2].poll() is None:
            if procs[1].poll() is not None:
                # Like a pod supervisor: a dead worker is replaced, and Temporal hands its
                # unfinished turns to the new one (try `kill -9` on it mid-reply).
                print(f"worker exited ({procs[1].returncode}); starting a new one", flush=True)
                procs[1] = _spawn("worker", env)
            time.sleep(0.5)
        print("the Temporal server or the gateway exited; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the drain
        for proc in reversed(procs):  # gateway, worker (drains), then the server
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _spawn(module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Own session: Ctrl-C reaches only this process, which stops the rest in order.
    return subprocess.Popen([sys.executable, "-m", module], env=env, start_new_session=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _dev_api_key(env: dict[str, str]) -> str:
    """A development key kept in .data/, unless CHAT_API_KEYS is already configured."""
    if env.get("CHAT_API_KEYS"):
        return "(from CHAT_API_KEYS)"
    path = DATA / "dev-api-key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    key = path.read_text().strip()
    env["CHAT_API_KEYS"] = json.dumps({key: "dev"})
    return key


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with code {proc.returncode}; see .data/temporal.log")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit(f"{name} did not open port {port} within 60 s")


def _banner(key: str, gateway_port: int) -> None:
    print(
        f"""
  Durable chat is up.
    Gateway     http://127.0.0.1:{gateway_port}   (API docs: /docs)
    Temporal UI http://localhost:{UI_PORT}
    API key     {key}   (user "dev")

  Chat in another terminal:  CHAT_API_KEY={key} .venv/bin/python -m cli chat
  Ctrl-C stops everything; sessions are kept in .data/.
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
