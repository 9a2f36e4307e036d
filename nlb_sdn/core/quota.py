"""Per-source quotas: how many new connections one client prefix may open within a sliding window."""

from __future__ import annotations

from collections import OrderedDict, deque

from nlb_sdn.affinity.sessions import client_prefix


class SourceQuota:
    """At most ``limit`` new connections per client prefix (``prefix_len`` bits) in any ``window`` seconds.

    A SYN flood from spoofed sources inside one prefix then costs the VIP service at most ``limit`` tracked
    connections per window, whatever its rate; the other prefixes' clients keep theirs. ``limit`` 0 admits everything.
    Prefixes are kept in the order of their latest admission, so those quiet for a window are dropped from the front.
    """

    def __init__(self, prefix_len: int, limit: int, window: float) -> None:
        self.prefix_len = prefix_len
        self.limit = limit
        self.window = window
        self.recent: OrderedDict[str, deque[float]] = OrderedDict()
        """Admission times within the window, per client prefix."""

    def admit(self, client_ip: str, now: float) -> bool:
        """Whether a new connection from ``client_ip`` fits its prefix's quota (if so, it is counted)."""
        if not self.limit:
            return True
        since = now - self.window
        self._forget_quiet(since)
        prefix = client_prefix(client_ip, self.prefix_len)
        times = self.recent.get(prefix)
        if times is None:
            times = self.recent[prefix] = deque()
        while times and times[0] <= since:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        self.recent.move_to_end(prefix)
        return True

    def _forget_quiet(self, since: float) -> None:
        """Drop the prefixes whose latest admission is older than the window."""
        while self.recent:
            times = next(iter(self.recent.values()))
            if times and times[-1] > since:
                return
            self.recent.popitem(last=False)

    def __len__(self) -> int:
        return len(self.recent)
