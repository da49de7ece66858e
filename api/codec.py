"""The codec endpoint: Temporal's remote codec protocol, so the Temporal UI and CLI can show
decrypted history, each caller only that of their own sessions.

The protocol (what the UI's "Codec Server" setting and `temporal --codec-endpoint` speak):
`POST <endpoint>/decode` and `POST <endpoint>/encode`, body `{"payloads": [...]}` in protobuf
JSON form (metadata values and data in base64), header `X-Namespace`, answered in the same form.

Two ways in, one rule:
- `/codec/decode|encode` with `Authorization: Bearer <API key>` (the CLI: `--codec-auth`);
- `/codec/u/<token>/decode|encode` for the UI, which cannot send our API key: the token is
  `<user>.<base64url HMAC-SHA256(CHAT_CODEC_TOKEN_SECRET, user)>`, shown by `GET /v1/codec`.
  No secret configured: those URLs are 404. A user removed from CHAT_API_KEYS loses their
  token too; changing the secret revokes every token.

Decode opens a payload only when it is sealed for a workflow id that names the caller as owner
(the id is bound to the ciphertext, so it cannot be swapped); every other payload (another
user's, one sealed for no workflow, one never sealed, one from another namespace) comes back
as it was sent (its metadata and data). Encode seals for no workflow: what the UI sends into
a workflow (a signal, a start) is ciphertext at rest that workers can open, but that no decode
call will ever open for anyone, so encode cannot be used to learn anything. Without encryption
keys both return the payloads unchanged, which is what a codec that does nothing would do.

CORS is open on `/codec/*` only, to the Temporal UI's origin, and that path has its own body
limit, sized for history payloads rather than chat messages.
"""

import base64
import hashlib
import hmac
import logging
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from pydantic import BaseModel, Field
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payload

from api.auth import CurrentUser
from api.body_limit import BodySizeLimit
from api.deps import SettingsDep
from api.errors import ApiError
from api.schemas import ErrorBody
from common.encryption import ENCODING, EncryptionCodec, EncryptionKeyError, sealed_for
from common.ids import is_valid_id, parse_workflow_id
from common.settings import Settings
from common.temporal_client import data_converter

log = logging.getLogger("api.codec")

PREFIX = "/codec"
TOKEN_PATH = re.compile(r"(/codec/u/)[^/?#\s\"]+")
CORS_HEADERS = ["Content-Type", "X-Namespace", "Authorization"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The request body could not be read."},
    401: {"model": ErrorBody, "description": "Missing or unknown API key or codec token."},
    404: {"model": ErrorBody, "description": "Codec tokens are not enabled."},
    413: {"model": ErrorBody, "description": "The body is over CHAT_CODEC_MAX_REQUEST_BYTES."},
    422: {"description": 'The body is not `{"payloads": [...]}` in protobuf JSON form.'},
}

router = APIRouter(tags=["codec"], responses=_ERRORS)


# ---- bodies ---------------------------------------------------------------------------------


class JsonPayload(BaseModel):
    """A Temporal Payload in protobuf JSON: metadata values and data are base64. Other fields
    (`externalPayloads`, for external storage, which this service does not use) are dropped."""

    metadata: dict[str, str] = Field(
        default_factory=dict, examples=[{"encoding": "YmluYXJ5L2VuY3J5cHRlZA=="}]
    )
    data: str = Field(default="", examples=["c2VhbGVk"])


class CodecPayloads(BaseModel):
    payloads: list[JsonPayload]


class CodecInfo(BaseModel):
    encryption: bool = Field(description="Whether this deployment seals payloads at all.")
    endpoint: str = Field(
        description="For clients that send `Authorization: Bearer <API key>`, e.g. "
        "`temporal workflow show --codec-endpoint <this> --codec-auth 'Bearer <key>'`."
    )
    ui_endpoint: str | None = Field(
        description="Your personal URL for the Temporal UI's Codec Server setting (keep it "
        "secret: it decrypts your sessions); null when CHAT_CODEC_TOKEN_SECRET is unset."
    )
    ui_origins: list[str] = Field(description="Pages allowed to call the codec (CORS).")


# ---- tokens ---------------------------------------------------------------------------------


def codec_token(secret: str, user: str) -> str:
    """The codec token of `user`: `<user>.<base64url HMAC-SHA256(secret, user)>`."""
    mac = hmac.new(secret.encode(), user.encode(), hashlib.sha256).digest()
    return f"{user}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def token_user(token: str, settings: SettingsDep) -> str:
    """The user a codec token in the path was made for."""
    if settings.codec_token_secret is None:
        raise ApiError(404, "codec tokens are not enabled on this gateway")
    user = token.partition(".")[0]
    valid = is_valid_id(user) and hmac.compare_digest(
        token.encode(), codec_token(settings.codec_token_secret.get_secret_value(), user).encode()
    )
    if not valid or user not in settings.api_keys.values():
        raise ApiError(401, "unknown codec token")
    return user


TokenUser = Annotated[str, Depends(token_user)]


# ---- the codec ------------------------------------------------------------------------------


async def get_codec(request: Request) -> EncryptionCodec | None:
    """The process's codec, built once from the same settings as its Temporal client."""
    state = request.app.state
    if not hasattr(state, "codec"):
        codec = data_converter(request.app.state.settings).payload_codec
        state.codec = codec if isinstance(codec, EncryptionCodec) else None
    found: EncryptionCodec | None = state.codec
    return found


CodecDep = Annotated[EncryptionCodec | None, Depends(get_codec)]
Namespace = Annotated[str | None, Header(alias="X-Namespace")]


def _b64(text: str) -> bytes:
    """Protobuf JSON bytes: standard or URL-safe base64, padding optional."""
    text = text.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError as err:  # binascii.Error, or non-ASCII text
        raise ApiError(422, f"malformed payload: not base64 ({err})") from err


def _proto(payload: JsonPayload) -> Payload:
    metadata = {key: _b64(value) for key, value in payload.metadata.items()}
    try:
        return Payload(metadata=metadata, data=_b64(payload.data))
    except ValueError as err:  # a metadata key that is not UTF-8 (a lone surrogate)
        raise ApiError(422, "malformed payload: metadata keys must be UTF-8") from err


def _json(payload: Payload) -> dict[str, Any]:
    return json_format.MessageToDict(payload)


def _as_sent(payload: JsonPayload) -> dict[str, Any]:
    return payload.model_dump(exclude_unset=True)


def _answer(payloads: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"payloads": payloads})


def _ours(settings: Settings, namespace: str | None) -> bool:
    return namespace is None or namespace == settings.temporal_namespace


def decode_for(user: str, codec: EncryptionCodec, payloads: list[Payload]) -> list[Payload | None]:
    """Each payload opened if it is sealed for one of `user`'s sessions, else None (leave it)."""
    out: list[Payload | None] = []
    for payload in payloads:
        opened = None
        try:
            parsed = parse_workflow_id(sealed_for(payload) or "")
            if parsed is not None and parsed[0] == user:
                opened = codec.open(payload)
        except EncryptionKeyError as err:  # a key this gateway lacks, or tampered with
            log.warning("a payload of user %r stays sealed: %s", user, err)
        except ValueError:  # metadata or data that no sealing made (not UTF-8, no nonce)
            pass
        out.append(opened)
    return out


async def _decode(
    user: str, body: CodecPayloads, codec: EncryptionCodec | None, ours: bool
) -> JSONResponse:
    protos = [_proto(p) for p in body.payloads]  # malformed base64 is a 422 in every case
    if codec is None or not ours:
        return _answer([_as_sent(p) for p in body.payloads])
    opened = decode_for(user, codec, protos)
    return _answer(
        [
            _as_sent(sent) if plain is None else _json(plain)
            for sent, plain in zip(body.payloads, opened, strict=True)
        ]
    )


async def _encode(body: CodecPayloads, codec: EncryptionCodec | None, ours: bool) -> JSONResponse:
    protos = [_proto(p) for p in body.payloads]
    if codec is None or not ours:
        return _answer([_as_sent(p) for p in body.payloads])
    return _answer(
        [
            _as_sent(sent)
            if proto.metadata.get("encoding") == ENCODING
            else _json(codec.seal(proto))
            for sent, proto in zip(body.payloads, protos, strict=True)
        ]
    )


# ---- routes ---------------------------------------------------------------------------------

_DECODE_DOC = (
    "Temporal remote codec `decode`: payloads sealed for one of the caller's sessions come back "
    "opened; all others come back exactly as sent."
)
_ENCODE_DOC = (
    "Temporal remote codec `encode`: payloads are sealed with the current key, for no workflow "
    "(workers can open them; no decode call will)."
)


@router.post("/codec/decode", response_model=CodecPayloads, description=_DECODE_DOC)
async def decode(
    body: CodecPayloads,
    user: CurrentUser,
    codec: CodecDep,
    settings: SettingsDep,
    namespace: Namespace = None,
) -> JSONResponse:
    return await _decode(user, body, codec, _ours(settings, namespace))


@router.post("/codec/encode", response_model=CodecPayloads, description=_ENCODE_DOC)
async def encode(
    body: CodecPayloads,
    user: CurrentUser,
    codec: CodecDep,
    settings: SettingsDep,
    namespace: Namespace = None,
) -> JSONResponse:
    return await _encode(body, codec, _ours(settings, namespace))


@router.post("/codec/u/{token}/decode", response_model=CodecPayloads, description=_DECODE_DOC)
async def decode_with_token(
    body: CodecPayloads,
    user: TokenUser,
    codec: CodecDep,
    settings: SettingsDep,
    namespace: Namespace = None,
) -> JSONResponse:
    return await _decode(user, body, codec, _ours(settings, namespace))


@router.post("/codec/u/{token}/encode", response_model=CodecPayloads, description=_ENCODE_DOC)
async def encode_with_token(
    body: CodecPayloads,
    user: TokenUser,
    codec: CodecDep,
    settings: SettingsDep,
    namespace: Namespace = None,
) -> JSONResponse:
    return await _encode(body, codec, _ours(settings, namespace))


@router.get("/v1/codec")
async def codec_info(
    request: Request, user: CurrentUser, settings: SettingsDep, codec: CodecDep
) -> CodecInfo:
    """Where the Temporal UI and CLI decode your sessions' history: paste `ui_endpoint` into
    the UI's Codec Server setting (the UI's data encoder icon, or its settings page)."""
    base = (settings.gateway_public_url or str(request.base_url)).rstrip("/")
    secret = settings.codec_token_secret
    return CodecInfo(
        encryption=codec is not None,
        endpoint=f"{base}{PREFIX}",
        ui_endpoint=(
            f"{base}{PREFIX}/u/{codec_token(secret.get_secret_value(), user)}" if secret else None
        ),
        ui_origins=allowed_origins(settings),
    )


# ---- CORS, body limits, logs ----------------------------------------------------------------


def allowed_origins(settings: Settings) -> list[str]:
    if settings.codec_allowed_origins:
        return [origin.rstrip("/") for origin in settings.codec_allowed_origins]
    ui = urlsplit(settings.temporal_ui_url)
    return [f"{ui.scheme}://{ui.netloc}"]


IMPORT_PATH = "/v1/imports"


class RequestLimits:
    """Body limits and CORS by path: `/codec/*` may be called from the Temporal UI's pages and
    takes bodies up to `codec_max_request_bytes`; an import takes a whole exported session
    (`max_import_bytes`); every other path keeps the API's own limit (`max_request_bytes`)
    and allows no cross-origin calls."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.codec = CORSMiddleware(
            BodySizeLimit(app, settings.codec_max_request_bytes),
            allow_origins=allowed_origins(settings),
            allow_methods=["POST"],
            allow_headers=CORS_HEADERS,
            # The UI's "include cross-origin credentials" switch needs this; no cookie is
            # ever read here, so it grants nothing.
            allow_credentials=True,
            max_age=600,
        )
        self.api = BodySizeLimit(app, settings.max_request_bytes)
        self.imports = BodySizeLimit(app, settings.max_import_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX + "/"):
            await self.codec(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == IMPORT_PATH:
            await self.imports(scope, receive, send)
        else:
            await self.api(scope, receive, send)


class _RedactCodecTokens(logging.Filter):
    """Codec tokens are credentials: access log lines show `/codec/u/<token>/decode` instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                TOKEN_PATH.sub(r"\1<token>", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def redact_tokens_in_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactCodecTokens) for f in access.filters):
        access.addFilter(_RedactCodecTokens())
