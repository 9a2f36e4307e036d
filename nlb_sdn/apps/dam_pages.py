"""Reading the DAM in pages for the classifier app: every atom under a prefix at start, and one page for REST."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from nlb_sdn.dam import Dam
from nlb_sdn.dam.atoms import ROUTE_PREFIX, SESSION_PREFIX, Atom

DAM_LOAD_PAGE = 1000
"""Atoms read per scan when the DAM is loaded at start."""
LOG = logging.getLogger("nlb_sdn.classifier")


def scan_all(dam: Dam, prefix: str, now: float, errors: Counter[str]) -> list[Atom]:
    """Every live atom whose key starts with ``prefix``; what was listed before a failing scan (logged, counted)."""
    atoms: list[Atom] = []
    cursor: str | None = None
    try:
        while True:
            page, cursor = dam.scan(prefix, cursor, DAM_LOAD_PAGE, now)
            atoms += page
            if cursor is None:
                return atoms
    except Exception:  # e.g. a store refusing SCAN: start with what was listed
        errors["dam_load"] += 1
        LOG.exception("listing DAM atoms %r* failed after %d; starting without the rest", prefix, len(atoms))
        return atoms


def dam_page(dam: Dam, kind: str, cursor: str | None, count: int, now: float) -> dict[str, Any]:
    """One page of DAM atoms of a kind (``route`` or ``session``), as ``GET /v1/dam`` answers it."""
    prefix = ROUTE_PREFIX if kind == "route" else SESSION_PREFIX
    atoms, next_cursor = dam.scan(prefix, cursor, count, now)
    return {
        "kind": kind,
        "atoms": [
            {
                "key": a.key,
                "data": a.data,
                "metadata": {"version": a.version, "origin": a.origin, "expires_at": a.expires_at},
            }
            for a in atoms
        ],
        "count": len(atoms),
        "next_cursor": next_cursor,
    }
