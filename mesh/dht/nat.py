"""NAT sampling: settle on our public address from the `to` field of replies (sans-IO)."""

from __future__ import annotations

from collections import Counter

from ..encoding import Address

MAX_SAMPLES = 16


class NatSampler:
    __slots__ = ("_samples",)

    def __init__(self):
        self._samples: list[Address] = []

    def add(self, addr: Address) -> None:
        self._samples.append(addr)
        if len(self._samples) > MAX_SAMPLES:
            del self._samples[0]

    @property
    def size(self) -> int:
        return len(self._samples)

    @property
    def host(self) -> str | None:
        if not self._samples:
            return None
        return Counter(h for h, _ in self._samples).most_common(1)[0][0]

    @property
    def port(self) -> int:
        """The consistent public port, or 0 when mappings differ (randomized NAT)."""
        host = self.host
        if host is None:
            return 0
        ports = Counter(p for h, p in self._samples if h == host)
        port, count = ports.most_common(1)[0]
        seen = sum(ports.values())
        return port if count * 2 > seen or seen < 3 and count == seen else 0

    @property
    def address(self) -> Address | None:
        host = self.host
        return (host, self.port) if host else None
