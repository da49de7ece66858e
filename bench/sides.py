"""The two things being compared, behind one interface: open a session, run one turn.

Both are driven from the benchmark process, which is only a client: the bare side through
the Temporal client (`execute_update`), ours through the HTTP gateway.
"""

import uuid
from typing import Any, Protocol

import httpx
from temporalio.client import Client, WorkflowHandle

from api.service import SessionService
from bench.bare import BareTurnsWorkflow
from common.ids import new_id
from common.settings import Settings
from workflows.messages import SendMessage, SessionConfig


def message_text(n: int) -> str:
    """Same length for every turn, so history bytes do not grow with the turn number."""
    return f"bench message {n:07d}: how is the weather today?"


class Side(Protocol):
    name: str

    async def open(self, label: str) -> str:
        """Start a session; returns its key for `turn`."""
        ...

    async def turn(self, session: str, text: str) -> None: ...


class BareSide:
    """Update + one activity on a minimal workflow: the cost of Temporal itself."""

    name = "bare"

    def __init__(self, client: Client, task_queue: str) -> None:
        self._client = client
        self._task_queue = task_queue
        self._tag = uuid.uuid4().hex[:8]
        self._handles: dict[str, WorkflowHandle[BareTurnsWorkflow, None]] = {}

    async def open(self, label: str) -> str:
        wf_id = f"bench-bare-{self._tag}-{label}"
        self._handles[wf_id] = await self._client.start_workflow(
            BareTurnsWorkflow.run, id=wf_id, task_queue=self._task_queue
        )
        return wf_id

    async def turn(self, session: str, text: str) -> None:
        reply = await self._handles[session].execute_update(BareTurnsWorkflow.turn, text)
        if not reply:
            raise RuntimeError(f"bare turn on {session} returned nothing")


class OursSide:
    """Our service as a user sees it: HTTP to the gateway, which updates the session workflow."""

    name = "ours"

    def __init__(self, http: httpx.AsyncClient, user: str) -> None:
        self._http = http
        self.user = user
        self._tag = uuid.uuid4().hex[:8]

    async def open(self, label: str) -> str:
        session_id = f"bench-{self._tag}-{label}"
        response = await self._http.post("/v1/sessions", json={"session_id": session_id})
        _expect(response, 201)
        return session_id

    async def turn(self, session: str, text: str) -> None:
        response = await self._http.post(f"/v1/sessions/{session}/messages", json={"content": text})
        _expect(response, 200)  # 202 would mean the reply missed the gateway's wait limit
        body: dict[str, Any] = response.json()
        if body["reply"].get("error"):
            raise RuntimeError(f"turn on {session} failed: {body['reply']['error']}")


def _expect(response: httpx.Response, code: int) -> None:
    if response.status_code != code:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}, expected {code}: {response.text[:500]}"
        )


class DirectSide:
    """Ours without the gateway: the gateway's own SessionService, called in this process.

    Only for finding where time goes (`--direct`): the difference to `OursSide` is HTTP,
    FastAPI and the gateway process.
    """

    name = "direct"

    def __init__(
        self, client: Client, task_queue: str, user: str, max_turns_per_run: int | None
    ) -> None:
        self._settings = Settings(
            _env_file=None,
            task_queue=task_queue,
            scripted_provider_enabled=True,
            default_model="scripted/echo",
        )
        if max_turns_per_run is not None:
            self._settings.max_turns_per_run = max_turns_per_run
        self._service = SessionService(client, self._settings)
        self.user = user
        self._tag = uuid.uuid4().hex[:8]

    async def open(self, label: str) -> str:
        session_id = f"direct-{self._tag}-{label}"
        config = SessionConfig(
            model=self._settings.default_model,
            inactivity_timeout_seconds=self._settings.default_inactivity_timeout_seconds,
            max_turns_per_run=self._settings.max_turns_per_run,
        )
        await self._service.create(self.user, session_id, config)
        return session_id

    async def turn(self, session: str, text: str) -> None:
        msg = SendMessage(message_id=new_id(), content=text)
        reply = await self._service.send_and_wait(self.user, session, msg)
        if reply is None or reply.reply is None or reply.reply.error:
            raise RuntimeError(f"direct turn on {session} failed: {reply}")
