"""Migration tickets: the controller issues them for tracked l7 connections only, signed with the target host's key,
and a host's receiver takes a migration only with a ticket for itself, that connection and VIP, once, in time."""

from __future__ import annotations

import time

import pytest

from nlb_sdn.config import parse_config
from nlb_sdn.migration.receiver import Receiver
from nlb_sdn.migration.tickets import (
    TICKET,
    TICKET_FIELDS,
    TICKET_TTL,
    Grant,
    Ticket,
    TicketChecker,
    channel_key,
    issue,
)
from nlb_sdn.rest import make_app
from nlb_sdn.signed import DerivedKeys, derive_host_key, encode
from tests.lib.rest import call
from tests.lib.shell_double import ShellDouble
from tests.unit.test_l7 import COMMIT, CoreBackend, l7_data, open_connection
from tests.unit.test_migration import _state, _talk_to_receiver

MASTER = b"deployment-master-key-0123456789"
KEY_H2, KEY_H3 = derive_host_key(MASTER, "h2"), derive_host_key(MASTER, "h3")
NOW = 1000.0
VIP = ("10.0.0.100", 80)
CLIENT = ("10.0.0.1", 40000)
NONCE = "0123456789abcdef0123456789abcdef"


def ticket(host: str = "h2", expires: float = NOW + TICKET_TTL, nonce: str = NONCE, **changes: object) -> Ticket:
    """A ticket moving CLIENT → VIP to ``host``."""
    fields = {"id": "m-1", "vip": VIP[0], "vport": VIP[1], "client": CLIENT[0], "cport": CLIENT[1]}
    return Ticket(**{**fields, **changes, "host": host, "expires": expires, "nonce": nonce})  # type: ignore[arg-type]


def test_a_hosts_ticket_checks_out_once_and_grants_the_channel_key_it_derives() -> None:
    checker = TicketChecker("h2", KEY_H2)
    grant = issue(KEY_H2, ticket(), "lbu:1", 1, NOW)
    checked = checker.check(grant.ticket, NOW + 1)
    assert checked == ticket() and checked.names(VIP, CLIENT) and not checked.names(VIP, (CLIENT[0], 40001))
    assert grant.channel_key == channel_key(KEY_H2, NONCE) != channel_key(KEY_H3, NONCE)
    assert checker.check(grant.ticket, NOW + 2) is None
    assert checker.refused == {"replayed": 1}


@pytest.mark.parametrize(
    "grant, reason",
    [
        (issue(KEY_H3, ticket(host="h3"), "lbu:1", 1, NOW), "unknown_kid"),  # another host's ticket
        (issue(KEY_H2, ticket(host="h3"), "lbu:1", 1, NOW), "unknown_kid"),  # names h3, signed as h2's key: kid h3
        (issue(KEY_H3, ticket(), "lbu:1", 1, NOW), "bad_mac"),  # names h2, signed with h3's key
        (issue(channel_key(KEY_H2, "f" * 32), ticket(), "r1", 1, NOW), "bad_mac"),  # a router's forgery
        (issue(MASTER, ticket(), "lbu:1", 1, NOW), "bad_mac"),
        (issue(KEY_H2, ticket(expires=NOW - 1), "lbu:1", 1, NOW), "expired"),
        (issue(KEY_H2, ticket(), "lbu:1", 1, NOW - 600), "stale"),
    ],
)
def test_tickets_for_another_host_forged_or_out_of_time_are_refused(grant: Grant, reason: str) -> None:
    checker = TicketChecker("h2", KEY_H2)
    assert checker.check(grant.ticket, NOW) is None
    assert checker.refused == {reason: 1}


def test_a_ticket_under_the_hosts_key_naming_another_host_is_refused() -> None:
    body = {name: getattr(ticket(host="h3"), name) for name in TICKET_FIELDS}
    data = encode(KEY_H2, TICKET, "lbu:1", 1, NOW, body, kid="h2")
    checker = TicketChecker("h2", KEY_H2)
    assert checker.check(data, NOW) is None and checker.refused == {"wrong_host": 1}


@pytest.mark.parametrize("changes", [{"cport": 40001}, {"client": "10.0.0.2"}, {"vip": "10.0.0.101"}, {"vport": 8080}])
def test_the_receiver_refuses_a_state_its_ticket_does_not_name(tmp_path, changes: dict) -> None:
    receiver = Receiver(KEY_H2, str(tmp_path / "app.sock"), src="h2")
    now = time.time()
    grant = issue(KEY_H2, ticket(expires=now + TICKET_TTL, **changes), "lbu:1", 1, now)
    state = _state().to_wire(grant.channel_key, "r1", 1, now, grant.migration_id)
    outcome, replies = _talk_to_receiver(receiver, [grant.ticket, state], grant)
    assert outcome == "refused" and receiver.tickets.refused == {"wrong_connection": 1}
    assert replies == [
        {"id": grant.migration_id, "ok": False, "stage": "restore", "error": "refused: wrong_connection"}
    ]


def test_the_receiver_closes_a_migration_without_a_valid_ticket_and_answers_nothing(tmp_path) -> None:
    receiver = Receiver(KEY_H2, str(tmp_path / "app.sock"), src="h2")
    now = time.time()
    other_host = issue(KEY_H3, ticket(host="h3", expires=now + TICKET_TTL), "lbu:1", 1, now)
    state = _state().to_wire(other_host.channel_key, "r1", 1, now, "m-1")
    assert _talk_to_receiver(receiver, [other_host.ticket, state]) == ("refused", [])
    no_ticket = _state().to_wire(KEY_H2, "r1", 2, now, "m-2")  # the host's own key, but no ticket at all
    assert _talk_to_receiver(receiver, [no_ticket]) == ("refused", [])
    assert receiver.tickets.refused == {"unknown_kid": 2}


def keyed_balancer() -> ShellDouble:
    """The l7 core with derived host keys and one connection of CLIENT at router r1."""
    data = l7_data()
    data["controller"]["health"] = {"enabled": True, "key_file": "/dev/null"}
    lb = ShellDouble(parse_config(data), hl_key=DerivedKeys(MASTER), now=NOW)
    open_connection(lb)
    return lb


def test_the_controller_tickets_a_tracked_connection_for_the_members_host_only() -> None:
    lb = keyed_balancer()
    grant = lb.migration_ticket("m-1", "web", *CLIENT, "h2", NOW, NONCE)
    host_h2 = lb.config.fabric.host("h2")
    assert host_h2 is not None
    checked = TicketChecker("h2", KEY_H2).check(grant.ticket, NOW)
    assert checked is not None and checked.names((lb.config.vips[0].address, 80), CLIENT)
    assert grant.channel_key == channel_key(KEY_H2, NONCE)
    assert TicketChecker("h3", KEY_H3).check(grant.ticket, NOW) is None
    with pytest.raises(LookupError, match="no connection"):
        lb.migration_ticket("m-2", "web", CLIENT[0], 40001, "h2", NOW, NONCE)
    with pytest.raises(LookupError, match="no member"):
        lb.migration_ticket("m-2", "web", *CLIENT, "r2", NOW, NONCE)  # a router is no migration target
    lb.commit_migration("m-1", "web", *CLIENT, "h2", NOW)
    with pytest.raises(ValueError, match="not at a router"):
        lb.migration_ticket("m-3", "web", *CLIENT, "h3", NOW, NONCE)
    assert lb.stats()["migrations"]["tickets"] == 1


def test_no_ticket_without_host_keys() -> None:
    lb = ShellDouble(parse_config(l7_data()))
    open_connection(lb)
    with pytest.raises(ValueError, match="no key for host 'h2'"):
        lb.migration_ticket("m-1", "web", *CLIENT, "h2", NOW, NONCE)


class TicketingBackend(CoreBackend):
    """The l7 REST backend test double, issuing tickets too."""

    def migration_ticket(self, request) -> dict[str, str]:
        client_ip, client_port = request.client_address
        grant = self.lb.migration_ticket(request.id, request.vip, client_ip, client_port, request.member, NOW, NONCE)
        return grant.as_dict()


def test_rest_ticket_answers_the_grant_and_refuses_what_it_cannot_ticket() -> None:
    lb = keyed_balancer()
    app = make_app(TicketingBackend(lb))
    response = call(app, "POST", "/v1/migrations", dict(COMMIT, phase="ticket"))
    assert response.status_int == 200, response.text
    grant = Grant.from_dict(response.json["ticket"])
    assert grant.migration_id == "m1" and TicketChecker("h2", KEY_H2).check(grant.ticket, NOW) is not None
    assert lb.connections()[0]["member"] == "r1", "a ticket moves nothing"
    assert call(app, "POST", "/v1/migrations", dict(COMMIT, phase="ticket", member="")).status_int == 400
    assert call(app, "POST", "/v1/migrations", dict(COMMIT, phase="ticket", client="10.0.0.1:1")).status_int == 404
    assert call(app, "POST", "/v1/migrations", dict(COMMIT, phase="ticket", member="r2")).status_int == 404
