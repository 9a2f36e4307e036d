"""Forwarders added and removed at runtime (``/v1/forwarders``, docs/fabric.md "Scale-out").

A forwarder is a fabric switch with its links. Adding or removing one edits the ``fabric`` section of the live model
as plain data, and the edited model goes through the one change path (``RestApp._apply``: validate, store, apply the
flow diff), as a VIP change does: the paths are recomputed over the new fabric and every connected switch gets only
the table 3 (and table 7) entries that changed; a new switch gets its whole pipeline when it connects.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import Field
from webob import Request, Response

from nlb_sdn.config import NAME_PATTERN, Config, ConfigError, Link, Switch, dump_config, validate_model
from nlb_sdn.config.base import Strict
from nlb_sdn.rest.body import read_json_object
from nlb_sdn.rest.errors import HttpError
from nlb_sdn.rest.views import json_response, known_params, page_of

if TYPE_CHECKING:
    from nlb_sdn.rest.app import RestBackend

SOURCE = "REST"
"""The source ConfigErrors of a forwarder's body name (as the app's)."""


class SwitchRole(StrEnum):
    """What a fabric switch does; every fabric switch runs the whole pipeline, so each is a forwarder."""

    FORWARDER = "forwarder"


class ForwarderLink(Strict):
    """A link of a new forwarder: its port, the switch at the other end and that switch's port."""

    port: int = Field(ge=1, lt=0xFFFFFF00)
    peer: str
    peer_port: int = Field(ge=1, lt=0xFFFFFF00)


class NewForwarder(Strict):
    """The body of ``POST /v1/forwarders``: the switch (name, datapath id) and its links to switches of the fabric."""

    name: str = Field(pattern=NAME_PATTERN)
    dpid: int = Field(ge=1, lt=2**64)
    links: list[ForwarderLink] = Field(default_factory=list)


def forwarder_view(config: Config, switch: Switch, connected: set[int]) -> dict[str, Any]:
    """One forwarder as ``GET /v1/forwarders`` shows it: name, dpid, role, connected, its links and attached hosts."""
    links = [
        {"port": link.a_port, "peer": link.b, "peer_port": link.b_port}
        if link.a == switch.name
        else {"port": link.b_port, "peer": link.a, "peer_port": link.a_port}
        for link in config.fabric.links
        if switch.name in (link.a, link.b)
    ]
    hosts = [host.name for host in config.fabric.hosts if host.switch == switch.name]
    return {
        "name": switch.name,
        "dpid": switch.dpid,
        "role": str(SwitchRole.FORWARDER),
        "connected": switch.dpid in connected,
        "links": links,
        "hosts": hosts,
    }


def find_switch(config: Config, name: str) -> Switch:
    """The fabric switch called ``name`` (or with that dpid, in decimal); 404 if there is none."""
    for switch in config.fabric.switches:
        if switch.name == name or str(switch.dpid) == name:
            return switch
    raise HttpError(404, "not_found", f"forwarder {name!r} does not exist")


def added(config: Config, new: NewForwarder) -> dict[str, Any]:
    """The live model's plain data with ``new`` and its links added; 409 when its name or dpid is taken."""
    for switch in config.fabric.switches:
        if switch.name == new.name:
            raise HttpError(409, "conflict", f"name: forwarder {new.name!r} already exists")
        if switch.dpid == new.dpid:
            raise HttpError(409, "conflict", f"dpid: forwarder {switch.name!r} already has dpid {new.dpid}")
    data = dump_config(config)
    data["fabric"]["switches"].append({"name": new.name, "dpid": new.dpid})
    for link in new.links:
        data["fabric"]["links"].append(
            Link(a=new.name, a_port=link.port, b=link.peer, b_port=link.peer_port).model_dump(mode="json")
        )
    return data


def removed(config: Config, switch: Switch) -> dict[str, Any]:
    """The live model's plain data without ``switch`` and its links; 409 while hosts are attached to it."""
    hosts = [host.name for host in config.fabric.hosts if host.switch == switch.name]
    if hosts:
        raise HttpError(409, "conflict", f"forwarder {switch.name!r} has hosts attached: {', '.join(hosts)}")
    data = dump_config(config)
    fabric = data["fabric"]
    fabric["switches"] = [item for item in fabric["switches"] if item["name"] != switch.name]
    fabric["links"] = [item for item in fabric["links"] if switch.name not in (item["a"], item["b"])]
    return data


class ForwarderRoutes:
    """The handlers of ``/v1/forwarders``, each change applied through the app's one change path (``apply``)."""

    def __init__(self, backend: RestBackend, apply: Callable[[dict[str, Any], Request], Config]) -> None:
        self.backend = backend
        self.apply = apply

    def _connected(self) -> set[int]:
        """The dpids of the switches connected to this controller now."""
        return set(self.backend.stats().get("switches", []))

    def list(self, request: Request) -> Response:
        """GET /v1/forwarders?limit=&marker=: every fabric switch with its links, in the list envelope."""
        known_params(request, ("limit", "marker"))
        config, connected = self.backend.current_config(), self._connected()
        views = [forwarder_view(config, switch, connected) for switch in config.fabric.switches]
        return json_response(page_of(request, "forwarders", views, lambda view: str(view["name"])))

    def get(self, request: Request, forwarder: str) -> Response:
        """GET /v1/forwarders/{forwarder} (by name or decimal dpid)."""
        config = self.backend.current_config()
        return json_response(forwarder_view(config, find_switch(config, forwarder), self._connected()))

    def create(self, request: Request) -> Response:
        """POST /v1/forwarders: add a switch and its links to the fabric; 201 with the forwarder and its Location."""
        try:
            body = validate_model(NewForwarder, read_json_object(request), SOURCE)
        except ConfigError as exc:
            raise HttpError(400, "invalid", f"{exc.key}: {exc.reason}") from None
        config = self.apply(added(self.backend.current_config(), body), request)
        view = forwarder_view(config, find_switch(config, body.name), self._connected())
        return json_response(view, status=201, location=f"/v1/forwarders/{body.name}")

    def delete(self, request: Request, forwarder: str) -> Response:
        """DELETE /v1/forwarders/{forwarder}: remove the switch and its links from the fabric; 204."""
        config = self.backend.current_config()
        self.apply(removed(config, find_switch(config, forwarder)), request)
        return Response(status=204)
