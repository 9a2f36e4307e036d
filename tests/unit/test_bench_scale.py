"""benchmarks/scale.py: the smoke mode grows the connection table, times packet-ins and weighs each connection."""

from __future__ import annotations

import json

from benchmarks.scale import BYTES_TARGET, SMOKE, client_of
from tests.lib.bench import positive, run_smoke

SMOKE_TIMEOUT = 120.0


def test_every_connection_has_its_own_client_address_and_port():
    clients = {client_of(index) for index in range(0, 3_000_000, 997)}
    assert len(clients) == len(range(0, 3_000_000, 997))
    assert all(1024 <= port < 65536 for _address, port in clients)


def test_smoke_mode_reports_time_and_bytes_at_every_checkpoint(tmp_path):
    out = tmp_path / "scale.json"
    result = run_smoke("scale.py", out, None, SMOKE_TIMEOUT)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert [row["connections"] for row in report["time"]] == list(SMOKE.checkpoints)
    assert [row["connections"] for row in report["memory"]] == list(SMOKE.checkpoints)
    for row in report["time"]:
        assert positive(row["packet_in_mean_us"]) and positive(row["packet_in_longest_ms"])
    for row in report["memory"]:
        assert 0 < row["bytes_per_connection"] <= BYTES_TARGET  # a size, not a time: at most 1 KB each
    assert set(report["growth"]) == {"packet-in mean time", "traced bytes"}
    assert "bytes each" in result.stdout
