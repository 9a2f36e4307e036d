"""Migration of l7 connections (SPEC §2.6): a router's commit moves the connection to a member; a failed one returns."""

from __future__ import annotations

from typing import Any

from nlb_sdn.config import Member, Vip
from nlb_sdn.core import l7
from nlb_sdn.core.context import CoreContext
from nlb_sdn.core.effects import Out
from nlb_sdn.core.manager import Manager
from nlb_sdn.core.model import ConnKey, Mode
from nlb_sdn.core.services.tunnel import tunnel_route
from nlb_sdn.flows import tunnel
from nlb_sdn.migration.tickets import TICKET_TTL, Grant, Ticket, issue


class MigrationManager(Manager):
    """Re-plumbs l7 connections between routers and members, and keeps the record of recent migrations."""

    def __init__(self, ctx: CoreContext) -> None:
        self.ctx = ctx
        self.log = l7.MigrationLog()

    def stats(self) -> dict[str, Any]:
        """Migrations by outcome and reason."""
        return dict(self.log.counters)

    def _key(self, vip: str, client_ip: str, client_port: int) -> ConnKey:
        """The connection key of a client's connection to the VIP service called ``vip`` (LookupError if unknown)."""
        state = self.ctx.vips.by_name(vip)
        if state is None:
            raise LookupError(f"vip {vip!r} does not exist")
        return client_ip, client_port, state.vip.address, state.vip.port

    def move(self, vip_name: str, client_ip: str, client_port: int, target: str, out: Out) -> None:
        """Re-plumb an l7 connection to ``target`` (a member, or one of the VIP's routers).

        The connection's table-1 entry is replaced (OFPFC_ADD with the same match and priority) by one that carries
        the label of the target's host; the connection table, the per-member counts and the route atom follow.
        Raises LookupError naming what is unknown, ValueError when the VIP is not in mode l7.
        """
        ctx = self.ctx
        state = ctx.vips.by_name(vip_name)
        if state is None:
            raise LookupError(f"vip {vip_name!r} does not exist")
        vip = state.vip
        if state.mode != Mode.L7:
            raise ValueError(f"vip {vip_name!r} is in mode {vip.mode}, not l7")
        key = (client_ip, client_port, vip.address, vip.port)
        conn = ctx.table.get(key)
        if conn is None:
            raise LookupError(f"no connection from {client_ip}:{client_port} to vip {vip_name!r}")
        routers = [l7.router_member(vip, r) for r in l7.vip_routers(vip, ctx.config.fabric)]
        member = vip.member(target) or next((r for r in routers if target in (r.name, r.address)), None)
        if member is None:
            raise LookupError(f"vip {vip_name!r} has no member or router {target!r}")
        route = tunnel_route(ctx, state, member, client_ip, client_port)
        ctx.table.forget(key)
        conn.member, conn.route = member.name, route
        ctx.table.add(key, conn, out)
        out.send(conn.dpid, tunnel.connection_flows(route))

    def ticket(
        self,
        migration_id: str,
        vip_name: str,
        client_ip: str,
        client_port: int,
        member_name: str,
        now: float,
        nonce: str,
    ) -> Grant:
        """A ticket for moving the connection of ``client_ip:client_port`` to VIP ``vip_name`` from the router that
        holds it to ``member_name``'s host, signed with that host's key, and the migration's channel key.

        Raises LookupError naming what is unknown (VIP, connection, member), ValueError when the VIP is not l7, the
        connection is not at one of its routers, or there is no key for the member's host.
        """
        state = self.ctx.vips.by_name(vip_name)
        if state is None:
            raise LookupError(f"vip {vip_name!r} does not exist")
        vip = state.vip
        if state.mode != Mode.L7:
            raise ValueError(f"vip {vip_name!r} is in mode {vip.mode}, not l7")
        conn = self.ctx.table.get((client_ip, client_port, vip.address, vip.port))
        if conn is None:
            raise LookupError(f"no connection from {client_ip}:{client_port} to vip {vip_name!r}")
        member = vip.member(member_name)
        if member is None:
            raise LookupError(f"vip {vip_name!r} has no member {member_name!r}")
        if conn.member not in {router.name for router in l7.vip_routers(vip, self.ctx.config.fabric)}:
            raise ValueError(f"the connection from {client_ip}:{client_port} is not at a router of vip {vip_name!r}")
        host = self.host_of(vip, member)
        keys = self.ctx.health.keys
        key = keys.key_for(host) if keys is not None else None
        if key is None:
            raise ValueError(f"no key for host {host!r} (controller.health.key_file)")
        ticket = Ticket(migration_id, host, vip.address, vip.port, client_ip, client_port, now + TICKET_TTL, nonce)
        self.log.counters["tickets"] += 1
        return issue(key, ticket, self.ctx.health.cache.src, self.ctx.health.seq.next(), now)

    def host_of(self, vip: Vip, member: Member) -> str:
        """The host id whose key a member's tickets are signed with: the fabric host with the member's address, else
        the agent that reports the member's endpoint, else the member's name."""
        fabric = next((host.name for host in self.ctx.config.fabric.hosts if host.ip == member.address), None)
        if fabric is not None:
            return fabric
        rows = self.ctx.health.cache.rows_for(member.address, member.port, vip.address, vip.port, vip.protocol)
        return next((entry.host_id for entry, _row in rows), member.name)

    def commit(
        self, migration_id: str, vip: str, client_ip: str, client_port: int, member: str, now: float, out: Out
    ) -> l7.Migration:
        """The migration commit: move the connection from its router to ``member`` and record it."""
        key = self._key(vip, client_ip, client_port)
        conn = self.ctx.table.get(key)
        router = conn.member if conn is not None else ""
        self.move(vip, client_ip, client_port, member, out)
        moved = self.ctx.table.by_key[key]
        return self.log.committed(migration_id, f"{client_ip}:{client_port}", vip, router, moved.member, now)

    def report(
        self,
        migration_id: str,
        vip: str,
        client_ip: str,
        client_port: int,
        router: str,
        member: str,
        outcome: str,
        reason: str,
        duration_ms: float | None,
        now: float,
        out: Out,
    ) -> l7.Migration:
        """A router's report of how a migration ended; a committed one that did not migrate goes back to its router."""
        migration, was_committed = self.log.reported(
            migration_id, f"{client_ip}:{client_port}", vip, router, member, outcome, reason, duration_ms, now
        )
        if not was_committed or outcome == "migrated" or not migration.router:
            return migration
        try:
            self.move(vip, client_ip, client_port, migration.router, out)
        except LookupError:
            return migration
        self.log.counters["returned_to_router"] += 1
        return migration
