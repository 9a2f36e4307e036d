"""The operator state stores: the state file (atomic, versioned, corrupt -> a clear error) and Redis (Lua CAS, feed)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from nlb_sdn.config import parse_config
from nlb_sdn.store import STATE_SUFFIX, StaleVersion, StateError, state_path
from nlb_sdn.store.file import FileStore
from nlb_sdn.store.operator import OperatorState, make_store, seed_ids, vips_of
from nlb_sdn.store.redis_store import RedisStore
from tests.lib.configs import web_config, web_member
from tests.lib.polling import poll_until
from tests.lib.redis_server import RedisServer

VIPS: list[dict[str, Any]] = vips_of(web_config([web_member(1), web_member(2)]))
IDS = {"web": 1}


def test_the_state_file_sits_beside_the_config_unless_a_path_is_given(tmp_path: Path) -> None:
    config = str(tmp_path / "nlb.yaml")
    assert state_path(config) == config + STATE_SUFFIX
    assert state_path(config, "state/ops.json") == str(tmp_path / "state" / "ops.json")
    assert state_path(config, "/var/lib/nlb.json") == "/var/lib/nlb.json"
    settings = web_config([web_member(1)], {"state": {"path": "ops.json"}})
    assert make_store(settings, config).location == str(tmp_path / "ops.json")


def test_file_store_versions_every_write_and_compares_and_sets(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "s.json"))
    assert store.load() is None
    assert store.save(VIPS, IDS, expected=0) == 1
    assert store.save(VIPS[:0], {}, expected=1) == 2
    with pytest.raises(StaleVersion) as lost:
        store.save(VIPS, IDS, expected=1)
    assert (lost.value.expected, lost.value.actual) == (1, 2)
    assert store.save(VIPS, IDS, expected=None) == 3, "without a condition the last writer wins"
    loaded = store.load()
    assert loaded is not None and (loaded.version, loaded.vips, loaded.vip_ids) == (3, VIPS, IDS)
    assert store.changed() is False


def test_file_store_writes_a_temp_file_fsyncs_and_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.json"
    store = FileStore(str(path))
    store.save(VIPS, IDS, expected=0)
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os, "replace", lambda a, b: (calls.append(f"replace {Path(a).parent == tmp_path}"), real_replace(a, b))[1]
    )
    store.save(VIPS, IDS, expected=1)
    assert calls == ["fsync", "replace True", "fsync"], "file fsync, rename in the same directory, directory fsync"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"], "no temp file is left"


def test_a_failed_write_leaves_the_old_version_whole_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.json"
    store = FileStore(str(path))
    store.save(VIPS, IDS, expected=0)
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StateError, match=f"{path}: cannot write the state file: No space left on device"):
        store.save([], {}, expected=1)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"format": 1, "version": 3, "vips": [', "the state file is corrupt (not JSON"),
        (b"\xff\xfe", "the state file is corrupt (not JSON"),
        (b"[]", "not a state document"),
        (b'{"format": 2, "version": 1, "vips": [], "vip_ids": {}}', "format: expected 1, got 2"),
        (b'{"format": 1, "version": "3", "vips": [], "vip_ids": {}}', "version: expected a whole number"),
        (b'{"format": 1, "version": 1, "vips": {}, "vip_ids": {}}', "vips: expected a list"),
        (b'{"format": 1, "version": 1, "vips": [], "vip_ids": {"web": "1"}}', "vip_ids: expected an object"),
    ],
)
def test_a_corrupt_state_file_is_an_error_naming_the_file(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(content)
    with pytest.raises(StateError) as error:
        FileStore(str(path)).load()
    assert error.value.location == str(path) and str(error.value).startswith(f"{path}: {reason}")


def test_an_unreadable_state_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.mkdir()
    with pytest.raises(StateError, match=f"^{path}: cannot read the state file"):
        FileStore(str(path)).load()


def test_operator_state_seeds_an_empty_store_then_the_store_is_the_truth(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path / "s.json"))
    first = web_config([web_member(1), web_member(2)])
    state = OperatorState(store, first)
    assert state.start() == first and (state.version, state.vip_ids) == (1, seed_ids(first)) == (1, IDS)
    changed = parse_config({**first.model_dump(mode="json"), "vips": [{**VIPS[0], "members": [web_member(3)]}]})
    assert state.commit(changed, {"web": 1}, expected=1) == 2
    with pytest.raises(StaleVersion):
        state.commit(changed, {"web": 1}, expected=1)
    edited_file = web_config([web_member(1)], {"max_connections": 7})
    restarted = OperatorState(FileStore(str(tmp_path / "s.json")), edited_file)
    config = restarted.start()
    assert [m.name for m in config.vips[0].members] == ["h3"], "the store, not the file, holds the VIPs"
    assert config.controller.max_connections == 7, "the file still holds the controller section"
    assert restarted.version == 2


def test_a_stored_state_that_does_not_validate_stops_the_start_naming_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    FileStore(str(path)).save([{**VIPS[0], "port": 0}], IDS, expected=0)
    with pytest.raises(StateError, match=rf"^{path}: version 1: vips\[web\]\.port: "):
        OperatorState(FileStore(str(path)), web_config([web_member(1)])).start()


# -- Redis -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield redis_server.url
    client.close()


def test_redis_store_compares_and_sets_and_announces_each_version(redis_url: str) -> None:
    ours, theirs = RedisStore(redis_url, "t:"), RedisStore(redis_url, "t:")
    assert ours.load() is None
    assert ours.changed() is True, "a fresh subscription cannot know what it missed"
    assert ours.save(VIPS, IDS, expected=0) == 1
    with pytest.raises(StaleVersion):
        theirs.save(VIPS, IDS, expected=0)
    assert theirs.save([], {}, expected=1) == 2
    assert poll_until(ours.changed, 2.0, 0.02), "the change feed announces the other writer's version"
    assert ours.changed() is False
    loaded = ours.load()
    assert loaded is not None and (loaded.version, loaded.vips, loaded.vip_ids) == (2, [], {})
    assert ours.save(VIPS, IDS, expected=None) == 3
    ours.close()
    theirs.close()


def test_a_corrupt_redis_state_is_an_error_naming_the_url_and_key(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.hset("t:state", mapping={"version": "1", "document": "{not json"})
    with pytest.raises(StateError, match=rf"^{redis_url} key t:state: the state is corrupt"):
        RedisStore(redis_url, "t:").load()
    client.delete("t:state")
    client.set("t:state", "a string")
    with pytest.raises(StateError, match=rf"^{redis_url} key t:state: cannot read the state"):
        RedisStore(redis_url, "t:").load()


def test_an_unreachable_redis_is_an_error_naming_the_url_without_its_password() -> None:
    store = RedisStore("redis://ops:secret@127.0.0.1:1/0", "t:")
    with pytest.raises(StateError) as error:
        store.load()
    assert str(error.value).startswith("redis://ops@127.0.0.1:1/0 key t:state: cannot read the state")
    assert "secret" not in str(error.value)


def test_operator_states_on_one_redis_follow_each_other(redis_url: str) -> None:
    config = web_config([web_member(1)], {"state": {"backend": "redis", "url": redis_url, "prefix": "f:"}})
    first, second = (OperatorState(make_store(config, "unused.yaml"), config) for _ in range(2))
    assert first.start() == config and first.version == 1
    assert second.start() == config and second.version == 1, "the second controller takes the seeded state"
    assert second.newer() is None
    changed = web_config([web_member(1, weight=5)], config.controller.model_dump(mode="json"))
    first.commit(changed, {"web": 1}, expected=1)
    newer = poll_until(second.newer, 2.0, 0.02)
    assert newer is not None
    stored, model = newer
    assert stored.version == 2 and model.vips[0].members[0].weight == 5
    assert second.follow(stored) is True and second.follow(stored) is False
    assert json.loads(json.dumps(stored.vip_ids)) == {"web": 1}


def test_the_controller_command_refuses_a_corrupt_state_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nlb_sdn.cli import main

    config = tmp_path / "nlb.json"
    config.write_text(json.dumps(web_config([web_member(1)]).model_dump(mode="json")))
    state = Path(str(config) + STATE_SUFFIX)
    state.write_text('{"format": 1, "version": 2, "vips": [{"name": "web"}], "vip_ids": {}}')
    assert main(["controller", "--config", str(config)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {state}: version 2: vips[web].address: Field required")
