"""The web console served by `rehost server` at ``/console`` (see `rehost.console.app.console_app`)."""

from rehost.console.app import console_app, console_routes

__all__ = ["console_app", "console_routes"]
