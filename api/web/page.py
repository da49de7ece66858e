"""The web chat page at `/chat` (`/` redirects there): plain HTML, CSS and JavaScript from
`static/`, no build step and nothing loaded from elsewhere. The page talks to the `/v1` API
with the API key the user signs in with (kept in the tab's sessionStorage, never in a URL).

None of these routes is in the OpenAPI schema: they are the page, not the API. Every response
carries a strict Content-Security-Policy: scripts, styles and requests only from this origin,
no inline script, no framing.
"""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from api.auth import CurrentUser
from api.deps import ServiceDep
from api.errors import ApiError
from common.ids import is_valid_id

STATIC = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag): a new version shows on the next load
}
# The only files served, with their types: a fixed list, so no path ever reaches the disk.
ASSETS = {"chat.js": "text/javascript", "chat.css": "text/css"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("chat", status_code=307)  # relative: works under a path prefix


@router.get("/chat")
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)


@router.get("/chat/static/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise ApiError(404, f"no file {name!r}")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=HEADERS)


@router.get("/chat/links/{session_id}")
async def links(session_id: str, user: CurrentUser, service: ServiceDep) -> dict[str, str]:
    """Where the caller's session is in the Temporal UI (as `POST /v1/sessions` says at
    creation), for a session the page opens from the list."""
    if not is_valid_id(session_id):
        raise ApiError(404, f"session_id {session_id!r} is not valid")
    return {"temporal_ui_url": service.ui_url(user, session_id)}
