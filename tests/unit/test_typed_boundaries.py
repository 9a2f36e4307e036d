"""Typed seams added for mypy: the core's enum views of a VIP model, prepared bytes, atom data, a server's address."""

from __future__ import annotations

import msgpack
import pytest

from nlb_sdn.config import Vip, parse_config
from nlb_sdn.core.model import Affinity, Dispatch, Mode, Pinning, VipState
from nlb_sdn.dam.atoms import pack_data, unpack_data
from nlb_sdn.flows import templates
from nlb_sdn.migration.receiver import MigrationServer, Receiver

KEY = b"typed-boundaries-test-key-012345"


def vip(**fields: object) -> Vip:
    """A one-member VIP service with ``fields`` over the defaults."""
    data = {
        "name": "web",
        "address": "10.0.0.100",
        "port": 80,
        "members": [{"name": "h1", "address": "10.0.0.11", "port": 80}],
        **fields,
    }
    return parse_config({"vips": [data]}).vips[0]


def test_vip_state_keeps_the_models_modes_as_enums_in_step_with_the_model() -> None:
    state = VipState(vip(), 1)
    assert (state.mode, state.dispatch, state.pinning, state.affinity) == (
        Mode.NAT,
        Dispatch.CONTROLLER,
        Pinning.CONNTRACK,
        Affinity.NONE,
    )
    assert all(type(view) is not str for view in (state.mode, state.dispatch, state.pinning, state.affinity))
    state.vip = vip(dispatch="switch", affinity="client_ip")
    assert (state.mode, state.dispatch, state.pinning, state.affinity) == (
        Mode.NAT,
        Dispatch.SWITCH,
        Pinning.LEARN,
        Affinity.CLIENT_IP,
    )
    assert isinstance(state.dispatch, Dispatch) and isinstance(state.affinity, Affinity)


def test_packed_is_what_serialize_puts_in_buf_with_the_xid() -> None:
    msg = templates.packet_out_table(3, b"\x00" * 60)
    msg.xid = 0x01020304
    packed = msg.packed()
    assert bytes(packed[4:8]) == bytes.fromhex("01020304") and len(packed) == msg.msg_len
    msg.serialize()
    assert msg.buf == packed


def test_atom_data_must_unpack_to_a_dict() -> None:
    assert unpack_data(pack_data({"a": 1, 2: [3]})) == {"a": 1, 2: [3]}
    with pytest.raises(TypeError, match="must be a dict, got list"):
        unpack_data(msgpack.packb([1, 2]))


def test_migration_server_names_the_port_the_kernel_picked(tmp_path) -> None:
    server = MigrationServer(Receiver(KEY, str(tmp_path / "handoff.sock")), ("127.0.0.1", 0))
    try:
        port = server.socket.getsockname()[1]
        assert port != 0 and server.listen_address == f"127.0.0.1:{port}"
    finally:
        server.server_close()
