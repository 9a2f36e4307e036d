"""Pydantic models of the REST API's answers and of the bodies that are not config objects, for the OpenAPI document.

The handlers still build plain dicts; these models only describe them (``nlb_sdn.rest.openapi`` turns them into JSON
Schema). Views that the controller may grow (stats, allotments, the H&L cache) allow keys beyond those named here.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from nlb_sdn.config import Member, Vip
from nlb_sdn.rest.status import OperatingStatus, ProvisioningStatus

VIP_MODES: tuple[str, ...] = get_args(Vip.model_fields["mode"].annotation)
"""The ``mode`` filter's values: a VIP's modes."""
MEMBER_STATES: tuple[str, ...] = get_args(Member.model_fields["state"].annotation)
"""The ``state`` filter's values: a member's target states."""

NEXT_MARKER = Field(
    default=None,
    description="Present only when the request gave `limit` or `marker`: pass it as `marker` for the next page; "
    "null on the last page.",
)
COUNT = Field(description="How many items this answer holds.")


class Open(BaseModel):
    """A view with the keys named here and possibly others."""

    model_config = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    """Every error: a short code and a detail naming the key at fault."""

    model_config = ConfigDict(extra="forbid")

    error: str = Field(description="Short code: invalid, bad_json, not_found, conflict, unauthorized, ...")
    detail: str = Field(description="What is wrong, starting with the key (config path, query parameter, header).")


class WeightChange(BaseModel):
    """``PUT /v1/vips/{vip}/members/{member}``: only the weight may change."""

    model_config = ConfigDict(extra="forbid")

    weight: int = Field(ge=0, le=10_000)


class StateChange(BaseModel):
    """``PUT /v1/vips/{vip}/members/{member}/state``: the member's target state."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["active", "draining", "inactive"]


class Connection(Open):
    """A tracked connection (``label`` only in tunnel mode)."""

    client: str = Field(description="The client's `IPv4:port`.")
    vip: str
    vip_address: str
    member: str
    member_address: str
    dpid: int = Field(description="The switch holding its entries.")
    mode: str = Field(description="`nat` or `tunnel`.")
    label: int | None = Field(default=None, description="The member host's MPLS label (tunnel mode).")
    dispatch: str = Field(description="`controller`, or `switch` when adopted from the switch's flow stats.")
    cookie: str
    installed_at: float


class ConnectionList(BaseModel):
    """``GET /v1/connections``: tracked connections, by ``vip/client``."""

    connections: list[Connection]
    count: int = COUNT
    next_marker: str | None = NEXT_MARKER


class Session(Open):
    """A row of the session table (FIG. 23A)."""

    id: str = Field(description="The session's DAM key; `DELETE /v1/sessions/{id}` forgets it.")
    identifier: str
    type: str
    vip: str
    member: str
    endpoint: str
    client: str
    host_id: str
    expires_at: float
    expires_in: float
    origin: str


class SessionList(BaseModel):
    """``GET /v1/sessions``: session table rows, by id."""

    sessions: list[Session]
    count: int = COUNT
    next_marker: str | None = NEXT_MARKER


class Migration(BaseModel):
    """One migration of an l7 connection, as the controller saw it."""

    id: str
    client: str
    vip: str
    router: str
    member: str
    outcome: str
    reason: str
    duration_ms: float | None
    at: float
    committed_at: float | None


class MigrationList(BaseModel):
    """``GET /v1/migrations``: recent migrations (oldest first) and the counters by outcome."""

    migrations: list[Migration]
    count: int = COUNT
    counters: dict[str, int]
    next_marker: str | None = NEXT_MARKER


class MigrationResult(BaseModel):
    """``POST /v1/migrations``: the migration after the commit or report, confirmed by the switch."""

    migration: Migration
    confirmed: bool


class AtomMetadata(BaseModel):
    """An atom's metadata: version, origin LBU and expiry (null: none)."""

    version: int
    origin: str
    expires_at: float | None


class DamAtom(BaseModel):
    """A row of the DAM table (FIG. 23B)."""

    key: str
    data: dict[str, Any]
    metadata: AtomMetadata


class DamPage(BaseModel):
    """``GET /v1/dam``: one page of atoms of a kind."""

    kind: str
    atoms: list[DamAtom]
    count: int = COUNT
    next_cursor: str | None = Field(default=None, description="The same as `next_marker` (its older name).")
    next_marker: str | None = Field(default=None, description="Pass it as `marker` for the next page; null at the end.")


class MemberStateView(Open):
    """A member's target and current state: ``target``, ``configured_target``, ``reported_target``, ``current``,
    ``connections``, ``health_source``, ``health``, ``app_id``, ``provisioning_status``, ``operating_status``."""

    provisioning_status: ProvisioningStatus
    operating_status: OperatingStatus


class Stats(Open):
    """The controller's counters (docs/rest.md, /v1/stats)."""


class AllotmentView(Open):
    """The VIP service's FIG. 18 allotment in use and every candidate's eligibility."""


class HlCacheView(Open):
    """The consolidated H&L cache: every host's status, liveness, checksums and rows."""


class ConfigView(Open):
    """The whole current config in the shape of the config file, secrets shown as `(redacted)`."""


class ConfigReloadView(BaseModel):
    """``POST /v1/config/reload``: the operator state's version, where the VIPs came from, the dotted keys the reload
    changed and those that changed in the file but keep their running value until a restart."""

    model_config = ConfigDict(extra="forbid")

    version: int
    vips: Literal["store", "file"]
    changed: list[str]
    needs_restart: list[str]


class Event(Open):
    """One event: id (the paging marker), when, its kind and VIP, and the kind's details."""

    id: int
    at: float
    kind: str
    vip: str | None


class EventList(BaseModel):
    """``GET /v1/events``: events oldest first, by id."""

    events: list[Event]
    count: int = COUNT
    next_marker: int | None = Field(default=None, description="The last event's id when more follow, else null.")


class MetricsText(BaseModel):
    """The controller's Prometheus metrics in the text exposition format (docs/metrics.md)."""


class OpenApiView(Open):
    """This OpenAPI 3.1 document."""


class FabricSwitch(BaseModel):
    """A forwarder of the static fabric and whether it is connected to this controller now."""

    name: str
    dpid: int
    connected: bool = Field(description="The switch has an OpenFlow connection to this controller.")
    master: int | None = Field(description="The `lbu_id` of the controller it answers to (this one), null if none.")


class FabricLink(BaseModel):
    """A switch-to-switch link."""

    a: str
    a_port: int
    b: str
    b_port: int


class FabricHost(BaseModel):
    """A host attached to a switch port, with the VIP members it serves (`vip/member`)."""

    name: str
    ip: str
    mac: str
    switch: str
    port: int
    members: list[str] = Field(description="The `vip/member` names served at this host's address.")


class FabricGateway(BaseModel):
    """An uplink port with a router behind it, reaching clients by prefix (docs/fabric.md, "Gateways")."""

    name: str
    switch: str
    port: int
    router_ip: str
    router_mac: str
    prefixes: list[str]
    address: str = Field(description="The fabric-side gateway address the controller answers ARP for.")
    mac: str


class FabricView(BaseModel):
    """``GET /v1/fabric``: the fabric as a graph (switches, links, hosts, gateways) and this controller (the master)."""

    lbu_id: int = Field(description="This controller's `controller.lbu_id`.")
    switches: list[FabricSwitch]
    links: list[FabricLink]
    hosts: list[FabricHost]
    gateways: list[FabricGateway] = Field(default_factory=list)


class ForwarderLinkView(BaseModel):
    """A link of a forwarder: its port, the switch at the other end and that switch's port."""

    port: int
    peer: str
    peer_port: int


class ForwarderView(BaseModel):
    """A forwarder (a fabric switch running the pipeline), its links, attached hosts and connection state."""

    name: str
    dpid: int
    role: Literal["forwarder"] = Field(description="Every fabric switch runs the whole pipeline: a forwarder.")
    connected: bool = Field(description="The switch has an OpenFlow connection to this controller.")
    links: list[ForwarderLinkView]
    hosts: list[str] = Field(description="The hosts attached to this switch (a forwarder with hosts is not removed).")


class ForwarderList(BaseModel):
    """``GET /v1/forwarders``: every fabric switch with its links, by name."""

    forwarders: list[ForwarderView]
    count: int = COUNT
    next_marker: str | None = NEXT_MARKER


class UiFile(BaseModel):
    """A static file of the dashboard (HTML, JavaScript or CSS; docs/dashboard.md)."""


WARNINGS = Field(
    default=None,
    description="Present only when the VIP has something to warn about, e.g. members weighed in different units "
    "(agent-reported capacity and static weight); each names the members.",
)


PROVISIONING = Field(description="`ACTIVE`: a change is answered once it is applied.")
OPERATING = Field(description="Whether it serves traffic (docs/rest.md, `GET /v1/vips/{vip}/status`).")


class MemberView(Member):
    """A member, as in the config file, with its provisioning and operating status."""

    provisioning_status: ProvisioningStatus = PROVISIONING
    operating_status: OperatingStatus = OPERATING


class MemberAnswer(MemberView):
    """A member with its statuses, and its VIP's warnings when it has any."""

    warnings: list[str] | None = WARNINGS


class VipAnswer(Vip):
    """A VIP, as in the config file, with its and its members' statuses, and its warnings when it has any."""

    members: list[MemberView] = Field(default_factory=list)  # type: ignore[assignment]
    provisioning_status: ProvisioningStatus = PROVISIONING
    operating_status: OperatingStatus = OPERATING
    warnings: list[str] | None = WARNINGS


class VipList(BaseModel):
    """``GET /v1/vips``: every VIP with its members, by name."""

    vips: list[VipAnswer]
    count: int = COUNT
    next_marker: str | None = NEXT_MARKER


class MemberList(BaseModel):
    """``GET /v1/vips/{vip}/members``: the VIP's members with their statuses, by name."""

    members: list[MemberView]
    count: int = COUNT
    next_marker: str | None = NEXT_MARKER


class MemberStatus(BaseModel):
    """A member's node of the status tree."""

    name: str
    provisioning_status: ProvisioningStatus
    operating_status: OperatingStatus
    health_source: str = Field(description="`static`, `agent` or `probe`.")
    health: str
    target: str
    current: str = Field(description="The current load-balancing state: active, draining, drained or inactive.")
    connections: int


class VipStatus(BaseModel):
    """The VIP's node of the status tree: both statuses and its members' nodes."""

    name: str
    address: str
    port: int
    provisioning_status: ProvisioningStatus
    operating_status: OperatingStatus
    members: list[MemberStatus]


class StatusTree(BaseModel):
    """``GET /v1/vips/{vip}/status``: the VIP's and its members' statuses (Octavia-style), and its warnings."""

    vip: VipStatus
    warnings: list[str]
