"""Smooth weighted round-robin: a deterministic weighted choice with no randomness and no hashing."""

from __future__ import annotations


class SmoothWeightedRoundRobin:
    """Nginx-style smooth weighted round-robin over named members; weight 0 members are never picked."""

    __slots__ = ("_current", "_weights")

    def __init__(self, weights: dict[str, int]) -> None:
        self._weights: dict[str, int] = {}
        self._current: dict[str, int] = {}
        self.update(weights)

    def update(self, weights: dict[str, int]) -> None:
        """Replace the weights, keeping the running state of members that stay."""
        self._weights = {name: weight for name, weight in weights.items() if weight > 0}
        self._current = {name: self._current.get(name, 0) for name in self._weights}

    @property
    def weights(self) -> dict[str, int]:
        """The positive weights in use."""
        return dict(self._weights)

    def pick(self) -> str | None:
        """The next member, or None when no member has a positive weight."""
        if not self._weights:
            return None
        total = 0
        best: str | None = None
        best_value = 0
        for name, weight in self._weights.items():
            value = self._current[name] + weight
            self._current[name] = value
            total += weight
            if best is None or value > best_value:
                best, best_value = name, value
        assert best is not None
        self._current[best] -= total
        return best
