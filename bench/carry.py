"""`python -m bench.carry`: what one run boundary writes into history, payload store off and on.

A session with five turns per run and messages of 15,000 characters (the scripted provider
echoes each one, compaction off) carries ~150 KB of messages into its second run. Two stacks
(worker + gateway processes) share one dev server; `on` has CHAT_PAYLOAD_STORE_DIR, `off` has
not. Reported per side, in serialized bytes as Temporal stores them: the first run's
WorkflowExecutionContinuedAsNew event, the second run's WorkflowExecutionStarted event, the
first run's whole history, and what the payload store holds after the boundary.
"""

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from bench.procs import Child, free_port, spawn
from common.ids import workflow_id
from devstack.server import start_dev_env

ROOT = Path(__file__).parent.parent
SIDES = ("off", "on")
TURNS_PER_RUN = 5
MESSAGE_CHARS = 15_000
USER = "bench"
KEY = "bench-key"


def side_env(
    base: dict[str, str], address: str, side: str, port: int, store: Path
) -> dict[str, str]:
    env = {
        **base,
        "CHAT_TEMPORAL_ADDRESS": address,
        "CHAT_TASK_QUEUE": f"bench-carry-{side}-{uuid.uuid4().hex[:8]}",
        "CHAT_SCRIPTED_PROVIDER_ENABLED": "true",
        "CHAT_DEFAULT_MODEL": "scripted/echo",
        "CHAT_API_KEYS": json.dumps({KEY: USER}),
        "CHAT_GATEWAY_PORT": str(port),
        "CHAT_MAX_TURNS_PER_RUN": str(TURNS_PER_RUN),
        "CHAT_COMPACTION_ENABLED": "false",
    }
    if side == "on":
        env["CHAT_PAYLOAD_STORE_DIR"] = str(store)
    return env


async def wait_healthy(http: httpx.AsyncClient, child: Child) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not child.alive():
            raise SystemExit(f"{child.name} exited:\n{child.tail()}")
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"{child.name} did not start")


async def boundary(client: Client, http: httpx.AsyncClient) -> dict[str, int]:
    """Run one session past its first run boundary; the sizes of what the boundary wrote."""
    response = await http.post("/v1/sessions", json={})
    assert response.status_code == 201, response.text
    session_id = response.json()["session_id"]
    for turn in range(TURNS_PER_RUN + 1):
        text = f"turn {turn} " + "x" * (MESSAGE_CHARS - 8)
        sent = await http.post(f"/v1/sessions/{session_id}/messages", json={"content": text})
        assert sent.status_code == 200, sent.text
    wf_id = workflow_id(USER, session_id)
    second = await client.get_workflow_handle(wf_id).fetch_history()
    started = second.events[0]
    previous = started.workflow_execution_started_event_attributes.continued_execution_run_id
    first = await client.get_workflow_handle(wf_id, run_id=previous).fetch_history()
    ended: HistoryEvent = first.events[-1]
    assert ended.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    carried = started.workflow_execution_started_event_attributes.input.payloads[0]
    return {
        "continued_as_new_event": ended.ByteSize(),
        "next_run_started_event": started.ByteSize(),
        "carried_payload_in_history": carried.ByteSize(),
        "carried_payload_stored": sum(p.size_bytes for p in carried.external_payloads),
        "first_run_history": sum(e.ByteSize() for e in first.events),
    }


async def run(tmp: Path) -> dict[str, dict[str, int]]:
    env = await start_dev_env(dev_server_log_level="error")
    address = env.client.service_client.config.target_host
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
    store = tmp / "payloads"
    children: list[Child] = []
    results: dict[str, dict[str, int]] = {}
    try:
        for side in SIDES:
            port = free_port()
            environ = side_env(base, address, side, port, store)
            children.append(spawn(f"worker-{side}", ["-m", "worker"], environ, tmp, tmp))
            gateway = spawn(f"gateway-{side}", ["-m", "api"], environ, tmp, tmp)
            children.append(gateway)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=120,
            ) as http:
                await wait_healthy(http, gateway)
                results[side] = await boundary(env.client, http)
        files = [p for p in store.rglob("*") if p.is_file()] if store.exists() else []
        results["on"]["store_files"] = len(files)
        results["on"]["store_bytes"] = sum(p.stat().st_size for p in files)
    finally:
        for child in children:
            child.stop()
        await env.shutdown()
    return results


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-carry-") as tmp:
        results = asyncio.run(run(Path(tmp)))
    print(f"one run boundary, {TURNS_PER_RUN} turns of {MESSAGE_CHARS:,}-char messages + echoes")
    print(f"{'bytes':32} {'store off':>12} {'store on':>12}")
    for key in results["off"]:
        print(f"{key:32} {results['off'][key]:>12,} {results['on'][key]:>12,}")
    for key in ("store_files", "store_bytes"):
        print(f"{key:32} {'':>12} {results['on'][key]:>12,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
