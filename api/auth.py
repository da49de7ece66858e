"""Bearer API keys, each mapped to a user id in settings (`CHAT_API_KEYS`)."""

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import SettingsDep
from api.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="An API key from CHAT_API_KEYS.")


async def current_user(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None:
        raise ApiError(
            401,
            "missing API key: send 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    presented = credentials.credentials.encode()
    user = None
    for key, user_id in settings.api_keys.items():
        # Compare against every key, in constant time, so timing reveals nothing.
        if hmac.compare_digest(presented, key.encode()):
            user = user_id
    if user is None:
        raise ApiError(401, "unknown API key", {"WWW-Authenticate": "Bearer"})
    return user


CurrentUser = Annotated[str, Depends(current_user)]
