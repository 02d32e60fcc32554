"""Assembles the ASGI application of `rehost server` from a ControlPlane and the optional parts."""

from __future__ import annotations

from starlette.applications import Starlette

from rehost.api.app import build_app
from rehost.config import Settings
from rehost.console import console_routes
from rehost.controlplane import ControlPlane


def build_server_app(settings: Settings) -> tuple[Starlette, ControlPlane]:
    cp = ControlPlane(settings)
    app = build_app(cp, extra_routes=console_routes(cp), root_post=cp.ec2_api)
    cp.start()
    return app, cp
