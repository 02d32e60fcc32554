"""Assembles the ASGI application of `rehost server` from a ControlPlane and the optional parts."""

from __future__ import annotations

from starlette.applications import Starlette

from rehost.api.app import build_app
from rehost.config import Settings
from rehost.console import console_routes
from rehost.controlplane import ControlPlane
from rehost.launch.wiring import attach_launch


def build_server_app(settings: Settings) -> tuple[Starlette, ControlPlane]:
    cp = ControlPlane(settings)
    app = build_app(cp, extra_routes=console_routes(cp), root_post=attach_launch(cp))
    cp.start()  # after every part is attached, so resumed jobs find their launcher
    return app, cp
