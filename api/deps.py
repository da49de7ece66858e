"""Shared dependencies: settings and the process's one Temporal-backed session service.

All `async def`: FastAPI runs plain `def` dependencies in a thread pool, a measurable cost
on every request.
"""

from typing import Annotated

from fastapi import Depends, Request

from api.service import SessionService
from api.streaming import LiveStreams
from common.settings import Settings
from tools.registry import ToolRegistry


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_service(request: Request) -> SessionService:
    service: SessionService = request.app.state.sessions
    return service


async def get_tools(request: Request) -> ToolRegistry:
    tools: ToolRegistry = request.app.state.tools
    return tools


async def get_streams(request: Request) -> LiveStreams:
    streams: LiveStreams = request.app.state.streams
    return streams


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ServiceDep = Annotated[SessionService, Depends(get_service)]
ToolsDep = Annotated[ToolRegistry, Depends(get_tools)]
StreamsDep = Annotated[LiveStreams, Depends(get_streams)]
