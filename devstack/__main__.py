"""`python -m devstack` (what `make run` calls): the whole service on embedded defaults.

Starts the Temporal dev server (SQLite file under .data/, Web UI, search attributes), one
worker and the gateway; prints the URLs and a development API key; Ctrl-C stops everything.
State lives in .data/, so starting again keeps every session. Payloads are encrypted with a key
kept in .data/ too; those over 64 KiB are files in .data/payloads/ that history refers to.
The Web UI decrypts the dev user's sessions through the gateway's codec endpoint (api/codec.py).
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from api.codec import codec_token
from common.encryption import new_key
from common.settings import Settings, get_settings
from devstack.server import FAST_SERVER_ARGS, binary, search_attribute_args

DATA = Path(".data")
TEMPORAL_PORT = 7233
UI_PORT = 8233
# Closed sessions stay resumable for as long as Temporal keeps them (the namespace retention).
RETENTION = "8760h"
DEV_ENCRYPTION_KEY_ID = "dev"
WORKER_METRICS_PORT = 9464  # the worker's Prometheus endpoint (the gateway's is /metrics)


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
    env.setdefault("CHAT_WORKER_METRICS_PORT", str(WORKER_METRICS_PORT))
    encryption = _dev_encryption(env, settings)
    payloads = _dev_payload_store(env, settings)
    ui_codec_user, ui_codec_args = _dev_ui_codec(env, settings)

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
                    *ui_codec_args,
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
        print(f"  Encryption  {encryption}")
        print(f"  Payloads    {payloads}")
        worker_metrics = env["CHAT_WORKER_METRICS_PORT"]
        print(
            f"  Metrics     http://127.0.0.1:{settings.gateway_port}/metrics (gateway), "
            f"http://127.0.0.1:{worker_metrics}/metrics (worker)"
        )
        if ui_codec_user:
            print(f'  Codec       the Temporal UI decrypts the sessions of "{ui_codec_user}"')
        print(flush=True)
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


def _kept_secret(name: str, make: Callable[[], str]) -> str:
    """A secret made once and kept in .data/ (created with mode 600), so restarts reuse it."""
    path = DATA / name
    if not path.exists():
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(make())
    return path.read_text().strip()


def _dev_encryption(env: dict[str, str], settings: Settings) -> str:
    """Payload encryption with a key kept in .data/, unless CHAT_ENCRYPTION_KEYS is set.
    The key is as precious as .data/temporal.db: without it those sessions cannot be read."""
    if settings.encryption_keys:
        return "payloads sealed with CHAT_ENCRYPTION_KEYS"
    key = _kept_secret("encryption-key", new_key)
    env["CHAT_ENCRYPTION_KEYS"] = json.dumps({DEV_ENCRYPTION_KEY_ID: key})
    env["CHAT_ENCRYPTION_KEY_ID"] = DEV_ENCRYPTION_KEY_ID
    return f"payloads sealed with the key in {DATA / 'encryption-key'} (keep it with the data)"


def _dev_payload_store(env: dict[str, str], settings: Settings) -> str:
    """Large payloads in .data/payloads, unless CHAT_PAYLOAD_STORE_DIR is set. Like the key,
    it belongs with .data/temporal.db: history refers to its files."""
    size = f"{settings.payload_store_threshold_bytes // 1024} KiB"
    if settings.payload_store_dir is not None:
        return f"from {size} kept in {settings.payload_store_dir}"
    directory = DATA / "payloads"
    env["CHAT_PAYLOAD_STORE_DIR"] = str(directory.resolve())
    return f"from {size} kept in {directory} (keep it with the data)"


def _dev_ui_codec(env: dict[str, str], settings: Settings) -> tuple[str | None, list[str]]:
    """The Web UI's codec endpoint: the gateway's token URL of the one configured user, so the
    UI shows that user's sessions decrypted out of the box (others' stay ciphertext)."""
    if settings.codec_token_secret is not None:
        secret = settings.codec_token_secret.get_secret_value()
    else:
        secret = _kept_secret("codec-token-secret", lambda: secrets.token_urlsafe(32))
        env["CHAT_CODEC_TOKEN_SECRET"] = secret
    if not settings.codec_allowed_origins:
        origins = [f"http://localhost:{UI_PORT}", f"http://127.0.0.1:{UI_PORT}"]
        env["CHAT_CODEC_ALLOWED_ORIGINS"] = json.dumps(origins)
    users = sorted(set(json.loads(env["CHAT_API_KEYS"]).values()))
    if len(users) != 1:
        return None, []  # several users: each takes their URL from GET /v1/codec
    token = codec_token(secret, users[0])
    endpoint = f"http://127.0.0.1:{settings.gateway_port}/codec/u/{token}"
    return users[0], ["--ui-codec-endpoint", endpoint]


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
    Gateway     http://127.0.0.1:{gateway_port}   (web page: /chat, API docs: /docs)
    Temporal UI http://localhost:{UI_PORT}
    API key     {key}   (user "dev")

  Chat in another terminal:  CHAT_API_KEY={key} .venv/bin/python -m cli chat
  Ctrl-C stops everything; sessions are kept in .data/.
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
