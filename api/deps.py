"""Shared dependencies: settings and the process's one Temporal-backed session service."""

from typing import Annotated

from fastapi import Depends, Request

from api.service import SessionService
from common.settings import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_service(request: Request) -> SessionService:
    service: SessionService = request.app.state.sessions
    return service


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ServiceDep = Annotated[SessionService, Depends(get_service)]
