"""A small synchronous client for the gateway's HTTP API."""

import time
from typing import Any

import httpx


class GatewayError(Exception):
    pass


class Gateway:
    def __init__(self, url: str, key: str, timeout: float = 300) -> None:
        self._http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )

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

    def sessions(self) -> list[dict[str, Any]]:
        sessions: list[dict[str, Any]] = self._json(self._http.get("/v1/sessions"))["sessions"]
        return sessions

    def status(self, session_id: str) -> dict[str, Any]:
        return self._json(self._http.get(f"/v1/sessions/{session_id}"))

    def history(self, session_id: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        after = 0
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

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                detail = response.json()["detail"]
            except (ValueError, KeyError):
                detail = response.text
            raise GatewayError(f"{response.status_code}: {detail}")
        body: dict[str, Any] = response.json()
        return body
