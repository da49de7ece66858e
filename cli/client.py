"""A small synchronous client for the gateway's HTTP API."""

import time
import uuid
from collections.abc import Generator
from typing import Any

import httpx

from cli.sse import ServerEvent, iter_events

RECONNECTS = 5  # consecutive failed attempts to (re)open a turn's stream before giving up
RETRY_STATUSES = {429, 502, 503, 504}  # worth another try: a gateway or worker that is busy


class GatewayError(Exception):
    pass


class Gateway:
    def __init__(
        self,
        url: str,
        key: str,
        timeout: float = 300,
        *,
        transport: httpx.BaseTransport | None = None,
        reconnect_delay: float = 0.25,
    ) -> None:
        self._http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
            transport=transport,
        )
        self._reconnect_delay = reconnect_delay

    def create_session(self, **fields: Any) -> dict[str, Any]:
        body = {k: v for k, v in fields.items() if v is not None}
        return self._json(self._http.post("/v1/sessions", json=body))

    def send(self, session_id: str, content: str) -> dict[str, Any]:
        """The reply; when the gateway answers 202 (slow model), poll until it is ready."""
        response = self._http.post(f"/v1/sessions/{session_id}/messages", json={"content": content})
        while response.status_code == 202:
            time.sleep(0.5)
            response = self._http.get(response.json()["reply_url"])
        return self._json(response)

    def send_streaming(
        self,
        session_id: str,
        content: str,
        message_id: str | None = None,
        reconnects: int = RECONNECTS,
    ) -> Generator[ServerEvent, None, None]:
        """Send a message and yield its turn's events as they happen, up to `turn_completed`.

        If the connection drops (or the gateway says in-band that it lost the turn), this
        reconnects with `Last-Event-ID`, so each event comes once. Before the first event it
        resends instead: the message id makes that idempotent. After `reconnects` failed
        attempts in a row it raises GatewayError; the reply still lands in history.
        """
        message_id = message_id or uuid.uuid4().hex
        last_id: str | None = None
        failures = 0
        while True:
            if last_id is None:
                url = f"/v1/sessions/{session_id}/messages/stream"
                opened = self._http.stream(
                    "POST", url, json={"message_id": message_id, "content": content}
                )
            else:
                url = f"/v1/sessions/{session_id}/messages/{message_id}/stream"
                opened = self._http.stream("GET", url, headers={"Last-Event-ID": last_id})
            try:
                with opened as response:
                    if response.status_code >= 400:
                        response.read()
                        problem = self._error(response)
                        if response.status_code not in RETRY_STATUSES:
                            raise problem
                    else:
                        # An `error` event is held until the next one: the turn's own error
                        # comes before `turn_completed`; one at the very end means the stream
                        # broke off.
                        held: ServerEvent | None = None
                        for event in iter_events(response.iter_lines()):
                            if held is not None:
                                last_id = held.id or last_id
                                yield held
                                held = None
                            if event.event == "error":
                                held = event
                                continue
                            failures = 0
                            last_id = event.id or last_id
                            yield event
                            if event.event == "turn_completed":
                                return
                        problem = GatewayError("the stream ended before the turn did")
                        if held is not None:
                            status = held.data.get("status")
                            problem = GatewayError(f"{status}: {held.data.get('detail')}")
                            if status not in RETRY_STATUSES:
                                raise problem
            except httpx.TransportError as err:
                if last_id is None and failures >= reconnects:
                    raise  # never got through: "cannot reach the gateway"
                problem = GatewayError(f"connection lost ({type(err).__name__}: {err})")
            failures += 1
            if failures > reconnects:
                raise GatewayError(
                    f"{problem} (gave up after {reconnects} reconnects; the reply to message "
                    f"{message_id} will still be in the session's history)"
                )
            time.sleep(min(self._reconnect_delay * 2 ** (failures - 1), 2.0))

    def decide(
        self, session_id: str, call_id: str, approve: bool, reason: str | None = None
    ) -> dict[str, Any]:
        """Approve or deny a tool call that waits for the owner's decision."""
        return self._json(
            self._http.post(
                f"/v1/sessions/{session_id}/tool-calls/{call_id}/decision",
                json={"approve": approve, "reason": reason},
            )
        )

    def sessions(self) -> list[dict[str, Any]]:
        sessions: list[dict[str, Any]] = self._json(self._http.get("/v1/sessions"))["sessions"]
        return sessions

    def status(self, session_id: str) -> dict[str, Any]:
        return self._json(self._http.get(f"/v1/sessions/{session_id}"))

    def history(self, session_id: str, after: int = 0) -> list[dict[str, Any]]:
        """The session's messages after the first `after` (all of them by default)."""
        messages: list[dict[str, Any]] = []
        while True:
            page = self._json(
                self._http.get(
                    f"/v1/sessions/{session_id}/messages", params={"after": after, "limit": 500}
                )
            )
            messages += page["messages"]
            if page["next"] is None:
                return messages
            after = page["next"]

    def close(self) -> None:
        self._http.close()

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise self._error(response)
        body: dict[str, Any] = response.json()
        return body

    @staticmethod
    def _error(response: httpx.Response) -> GatewayError:
        try:
            detail = response.json()["detail"]
        except (ValueError, KeyError):
            detail = response.text
        return GatewayError(f"{response.status_code}: {detail}")
