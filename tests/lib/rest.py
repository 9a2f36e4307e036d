"""The REST API without a server: one request through the WSGI app."""

from __future__ import annotations

import json
from typing import Any

from webob import Request, Response

from nlb_sdn.config import Config
from nlb_sdn.config.reload import VipsSource, read_reload
from tests.lib.shell_double import ShellDouble


def call(app: Any, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Response:
    """Send one request through the WSGI ``app``; ``body`` is sent as JSON, ``raw`` as is (both as
    application/json)."""
    request = Request.blank(path, method=method)
    if body is not None:
        raw = json.dumps(body).encode()
    if raw is not None:
        request.body = raw
        request.content_type = "application/json"
    return request.get_response(app)


class CoreBackend:
    """The REST backend the classifier app provides, over the pure core and a fixed clock."""

    def __init__(self, lb: ShellDouble, config_path: str = "") -> None:
        self.lb = lb
        self.config_path = config_path
        """The config file a reload re-reads (none by default: a reload answers 400)."""

    def current_config(self) -> Config:
        return self.lb.config

    def config_version(self) -> int:
        return 1

    def apply_config(self, new: Config, expected_version: int | None = None) -> int:
        self.lb.apply_config(new, dpids=[], now=5.0)
        return 1

    def reload_config(self, vips: VipsSource, expected_version: int | None = None) -> dict:
        plan = read_reload(self.config_path, self.lb.config, vips)
        self.lb.apply_config(plan.config, dpids=[], now=5.0)
        return plan.view(1, vips)

    def connections(self, vip: str | None = None, member: str | None = None) -> list[dict]:
        return self.lb.connections(vip, member)

    def stats(self) -> dict:
        return self.lb.stats()

    def member_state(self, vip: str, member: str) -> dict:
        return self.lb.member_state(vip, member)

    def allotment(self, vip: str) -> dict:
        return self.lb.allotment(vip, now=5.0)

    def hl_cache(self) -> dict:
        return self.lb.health.cache.as_dict(5.0)

    def sessions(self, vip: str | None = None, member: str | None = None) -> list[dict]:
        return [s.as_dict(5.0) for s in self.lb.ctx.affinity.sessions.select(vip, member) if s.expires_at > 5.0]

    def delete_session(self, session_id: str) -> bool:
        return bool(self.lb.delete_session(session_id))

    def migrations(self, limit: int | None = None) -> dict:
        return self.lb.migrations.view(limit)
