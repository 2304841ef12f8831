"""dht-rpc's congestion window (sans-IO): at most 80 requests per 750 ms slot
and 160 over the last four slots; a reply frees a place in the current slot.
Slots advance from `now`, so no timer runs while the node is idle."""

from __future__ import annotations

MAX_WINDOW = 80
SLOT = 0.75


class CongestionWindow:
    __slots__ = ("max_window", "_window", "_i", "_total", "_slot")

    def __init__(self, now: float, max_window: int = MAX_WINDOW):
        self.max_window = max_window
        self._window = [0, 0, 0, 0]
        self._i = 0
        self._total = 0
        self._slot = int(now / SLOT)

    def _advance(self, now: float) -> None:
        slot = int(now / SLOT)
        steps = min(slot - self._slot, 4)
        self._slot = slot
        for _ in range(max(steps, 0)):
            self._i = (self._i + 1) & 3
            self._total -= self._window[self._i]
            self._window[self._i] = 0

    def is_full(self, now: float) -> bool:
        self._advance(now)
        return self._total >= 2 * self.max_window or self._window[self._i] >= self.max_window

    def send(self, now: float) -> None:
        self._advance(now)
        self._total += 1
        self._window[self._i] += 1

    def recv(self) -> None:
        if self._window[self._i] > 0:
            self._window[self._i] -= 1
            self._total -= 1

    def next_slot_at(self) -> float:
        """When the current slot ends (a full window may have room then)."""
        return (self._slot + 1) * SLOT
