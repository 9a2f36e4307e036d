"""Reading config files: YAML, TOML or JSON into plain data, with duplicate keys refused and YAML positions kept.

A :class:`Document` is the parsed data of one file and, for YAML, where each mapping key and sequence item stands in
the file, so that a validation error can name the line and column of the key it is about. Duplicate keys are an error
in every syntax (TOML refuses them itself), and so is a file with no settings at all.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

Position = tuple[int, int]
"""A 1-based line and column in a file."""

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ParseFailure(ValueError):
    """A file that does not parse into plain data, with where in the file, when known."""

    def __init__(self, reason: str, position: Position | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.position = position


class Problem(NamedTuple):
    """One thing wrong with a config: the dotted key, the reason, and the key's line and column when known."""

    key: str
    reason: str
    position: Position | None = None


@dataclass
class Document:
    """One config file's plain data and, for YAML, the position of every mapping key and sequence item in it."""

    data: Any
    source: str
    positions: dict[int, dict[Any, Position]] = field(default_factory=dict)
    """``id(container)`` → key or index → position; the containers are those inside :attr:`data`."""

    def position(self, loc: tuple[Any, ...]) -> Position | None:
        """Where the deepest element of ``loc`` (a pydantic error location) that exists in the file stands."""
        node, found = self.data, None
        for part in loc:
            marks = self.positions.get(id(node), {})
            if not isinstance(part, Hashable) or part not in marks:
                break
            found = marks[part]
            node = node[part]
        return found


def _mark(node: yaml.Node) -> Position:
    """A node's 1-based line and column."""
    return node.start_mark.line + 1, node.start_mark.column + 1


class _PositionLoader(_BaseLoader):  # type: ignore[misc, valid-type]  # the C loader has no stubs
    """A safe YAML loader that refuses duplicate keys and records where keys and items stand."""

    positions: dict[int, dict[Any, Position]]

    def construct_tracked_map(self, node: yaml.MappingNode) -> Iterator[dict[Any, Any]]:
        """Construct a mapping (as SafeLoader does), refusing a key given twice, and record its keys' positions."""
        data: dict[Any, Any] = {}
        yield data
        marks: dict[Any, Position] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in marks:
                line, column = _mark(key_node)
                raise ParseFailure(f"duplicate key {key!r} (first at line {marks[key][0]})", (line, column))
            if isinstance(key, Hashable):
                marks[key] = _mark(key_node)
        data.update(self.construct_mapping(node, deep=True))
        self.positions[id(data)] = marks

    def construct_tracked_seq(self, node: yaml.SequenceNode) -> Iterator[list[Any]]:
        """Construct a sequence and record its items' positions."""
        data: list[Any] = []
        yield data
        data.extend(self.construct_sequence(node, deep=True))
        self.positions[id(data)] = {index: _mark(item) for index, item in enumerate(node.value)}


_PositionLoader.add_constructor("tag:yaml.org,2002:map", _PositionLoader.construct_tracked_map)
_PositionLoader.add_constructor("tag:yaml.org,2002:seq", _PositionLoader.construct_tracked_seq)


def _parse_yaml(raw: bytes, document: Document) -> Any:
    """YAML into plain data, filling ``document.positions``."""
    loader = _PositionLoader(raw)
    loader.positions = document.positions
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        position = (mark.line + 1, mark.column + 1) if mark is not None else None
        raise ParseFailure(f"cannot parse: {exc.problem or exc.context}", position) from None
    finally:
        loader.dispose()


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ParseFailure(f"duplicate key {key!r}")
        data[key] = value
    return data


def _parse(raw: bytes, document: Document) -> Any:
    """The file's bytes as plain data, by the file name's extension (YAML unless .toml or .json)."""
    if document.source.endswith(".toml"):
        return tomllib.loads(raw.decode())
    if document.source.endswith(".json"):
        try:
            return json.loads(raw, object_pairs_hook=_unique_pairs)
        except json.JSONDecodeError as exc:
            raise ParseFailure(f"cannot parse: {exc.msg}", (exc.lineno, exc.colno)) from None
    return _parse_yaml(raw, document)


def read_document(path: str | os.PathLike[str]) -> Document:
    """Read and parse a YAML (.yaml/.yml), TOML (.toml) or JSON (.json) file; raise OSError or ParseFailure."""
    document = Document(data=None, source=os.fspath(path))
    with open(document.source, "rb") as handle:
        raw = handle.read()
    try:
        document.data = _parse(raw, document)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ParseFailure(f"cannot parse: {exc}".splitlines()[0]) from None
    except RecursionError:  # every one of the three parsers recurses per nesting level
        raise ParseFailure("cannot parse: nested too deeply") from None
    if document.data is None:
        raise ParseFailure("the file is empty: it has no settings")
    return document
