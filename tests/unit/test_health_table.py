"""H&L table 1204: row validation, app ids, the canonical checksum and change records."""

from __future__ import annotations

import zlib
from dataclasses import replace

import msgpack
import pytest

from nlb_sdn.health.table import FIELDS, HLTable, Row, app_id_of, table_checksum

ROW = Row(
    vip="10.0.0.100",
    vport=80,
    pip="10.0.0.11",
    pport=8080,
    proto="tcp",
    proto_info="",
    health="ok",
    load=3.0,
    capacity=100.0,
    target="active",
    current="active",
)


def test_app_id_format():
    assert app_id_of("10.0.0.100", 80, "tcp", "10.0.0.11", 8080) == "10.0.0.100:80/tcp/10.0.0.11:8080"
    assert app_id_of("10.0.0.100", 80, "tcp", "10.0.0.11", 8080, "host=a") == "10.0.0.100:80/tcp/10.0.0.11:8080?host=a"
    assert ROW.app_id == "10.0.0.100:80/tcp/10.0.0.11:8080"
    assert replace(ROW, proto_info="/api").app_id.endswith("?/api")


def test_to_dict_has_every_field_plus_app_id_sorted_and_round_trips():
    data = ROW.to_dict()
    assert list(data) == sorted([*FIELDS, "app_id"])
    assert Row.from_dict(data) == ROW
    without_app_id = {k: v for k, v in data.items() if k != "app_id"}
    assert Row.from_dict(without_app_id) == ROW


def test_numbers_are_normalised_to_floats_so_the_checksum_is_stable():
    row = Row(vip="10.0.0.100", vport=80, pip="10.0.0.11", pport=8080, load=3, capacity=100)
    assert type(row.load) is float and type(row.capacity) is float
    assert table_checksum([row]) == table_checksum([replace(row, load=3.0, capacity=100.0)])


@pytest.mark.parametrize(
    "field, value",
    [
        ("vip", "10.0.0.300"),
        ("vip", 167772260),
        ("vip", "010.0.0.1"),
        ("pip", "::1"),
        ("vport", 0),
        ("vport", 65536),
        ("vport", "80"),
        ("pport", True),
        ("proto", "sctp"),
        ("proto_info", 5),
        ("proto_info", "x" * 129),
        ("proto_info", "a\nb"),
        ("health", "up"),
        ("health", None),
        ("load", -1),
        ("load", float("nan")),
        ("load", float("inf")),
        ("load", "3"),
        ("load", True),
        ("capacity", 0),
        ("capacity", -2.5),
        ("target", "drained"),
        ("current", "failed"),
        ("app_id", "other"),
    ],
)
def test_from_dict_rejects_bad_values(field, value):
    data = ROW.to_dict()
    data[field] = value
    with pytest.raises(ValueError, match=field):
        Row.from_dict(data)


@pytest.mark.parametrize("data", [None, [], "row", {**ROW.to_dict(), "colour": "red"}])
def test_from_dict_rejects_non_maps_and_unknown_fields(data):
    with pytest.raises(ValueError):
        Row.from_dict(data)


@pytest.mark.parametrize("missing", FIELDS)
def test_from_dict_requires_every_field(missing):
    data = ROW.to_dict()
    del data[missing]
    with pytest.raises(ValueError, match=f"missing field '{missing}'"):
        Row.from_dict(data)


def test_constructor_validates_too():
    with pytest.raises(ValueError, match="health"):
        replace(ROW, health="sick")


def test_checksum_is_crc32_of_the_canonical_msgpack_list_sorted_by_app_id():
    other = replace(ROW, pip="10.0.0.9", load=0.5)
    rows = [ROW, other]
    expected_list = [dict(sorted(r.to_dict().items())) for r in sorted(rows, key=lambda r: r.app_id)]
    expected = zlib.crc32(msgpack.packb(expected_list, use_bin_type=True)) & 0xFFFFFFFF
    assert table_checksum(rows) == expected == table_checksum(reversed(rows))
    assert table_checksum([]) == zlib.crc32(b"\x90")
    assert table_checksum([replace(ROW, current="draining")]) != table_checksum([ROW])


def test_table_changes_carry_prev_and_new_checksums():
    table = HLTable()
    empty = table.checksum
    added = table.upsert(ROW)
    assert added is not None
    assert (added.op, added.app_id, added.row, added.prev_checksum) == ("add", ROW.app_id, ROW, empty)
    assert added.checksum == table.checksum == table_checksum([ROW])
    assert table.upsert(ROW) is None
    updated = table.upsert(replace(ROW, load=4.0))
    assert updated is not None and updated.op == "update" and updated.prev_checksum == added.checksum
    body = updated.body("h1")
    assert body == {
        "host_id": "h1",
        "op": "update",
        "app_id": ROW.app_id,
        "row": replace(ROW, load=4.0).to_dict(),
        "prev_checksum": added.checksum,
        "checksum": updated.checksum,
    }
    deleted = table.delete(ROW.app_id)
    assert deleted is not None and deleted.op == "delete" and deleted.row is None
    assert "row" not in deleted.body("h1")
    assert deleted.checksum == empty and len(table) == 0
    assert table.delete(ROW.app_id) is None


def test_table_rows_are_sorted_and_distinct():
    second = replace(ROW, pip="10.0.0.10")
    table = HLTable([ROW, second])
    assert table.rows() == [second, ROW]
    assert ROW.app_id in table and table.get(second.app_id) == second and table.get("nope") is None
    with pytest.raises(ValueError, match="duplicate"):
        HLTable([ROW, replace(ROW, load=9.0)])
