"""Kademlia routing table over 256-bit ids, k = 20 per row (sans-IO).

Rows are indexed by the length of the common prefix with our own id. A full
row does not drop its members for a newcomer: the caller pings the row's
least-recently-pinged node (`on_full` returns it) and only replaces it when
that ping fails (ping-before-evict, as in kademlia-routing-table).
"""

from __future__ import annotations

from ..encoding import Address

K = 20


class Node:
    __slots__ = ("id", "int_id", "address", "added", "pinged", "seen", "down_hints")

    def __init__(self, id_: bytes, addr: Address, tick: int = 0):
        self.id = id_
        self.int_id = int.from_bytes(id_, "big")
        self.address = addr
        self.added = tick
        self.pinged = tick
        self.seen = tick
        self.down_hints = 0

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]


class RoutingTable:
    __slots__ = ("id", "_int_id", "k", "rows", "_by_id", "pending")

    def __init__(self, id_: bytes, k: int = K):
        self.k = k
        self.rows: dict[int, list[Node]] = {}
        self._by_id: dict[bytes, Node] = {}
        # Newcomers waiting for a full row's ping result: row index -> Node.
        self.pending: dict[int, Node] = {}
        self.set_id(id_)

    def set_id(self, id_: bytes) -> None:
        """Re-key the table (e.g. on becoming persistent); members are re-added."""
        nodes = list(self._by_id.values())
        self.id = id_
        self._int_id = int.from_bytes(id_, "big")
        self.rows = {}
        self._by_id = {}
        self.pending = {}
        for n in nodes:
            self.add(n)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, id_: bytes) -> bool:
        return id_ in self._by_id

    def get(self, id_: bytes) -> Node | None:
        return self._by_id.get(id_)

    def nodes(self) -> list[Node]:
        return list(self._by_id.values())

    def _row(self, int_id: int) -> int:
        d = int_id ^ self._int_id
        return 256 - d.bit_length()

    def add(self, node: Node) -> Node | None:
        """Insert `node`. Returns None when added (or already there); when its row
        is full, returns the row's least-recently-pinged member, which the caller
        should ping and `evict` on failure; the newcomer is kept as the row's
        replacement candidate."""
        if node.int_id == self._int_id:
            return None
        existing = self._by_id.get(node.id)
        if existing is not None:
            existing.seen = max(existing.seen, node.seen)
            return None
        i = self._row(node.int_id)
        row = self.rows.setdefault(i, [])
        if len(row) < self.k:
            row.append(node)
            self._by_id[node.id] = node
            return None
        self.pending[i] = node
        return min(row, key=lambda n: n.pinged)

    def remove(self, id_: bytes) -> bool:
        node = self._by_id.pop(id_, None)
        if node is None:
            return False
        i = self._row(node.int_id)
        row = self.rows[i]
        row.remove(node)
        candidate = self.pending.pop(i, None)
        if candidate is not None and candidate.id not in self._by_id:
            row.append(candidate)
            self._by_id[candidate.id] = candidate
        if not row:
            del self.rows[i]
        return True

    def evict(self, node: Node) -> None:
        """The ping of a full row's member failed: drop it for the waiting newcomer."""
        self.remove(node.id)

    def keep(self, node: Node, tick: int) -> None:
        """The ping of a full row's member succeeded: it stays, the newcomer goes."""
        node.pinged = tick
        self.pending.pop(self._row(node.int_id), None)

    def closest(self, target: bytes, k: int | None = None) -> list[Node]:
        """Up to k members sorted by XOR distance to `target`.

        Walks rows instead of sorting the whole table: members of the target's
        own row are closest, then every deeper row (one distance band, sorted
        together), then the shallower rows one by one."""
        t = int.from_bytes(target, "big")
        k = self.k if k is None else k
        rows = self.rows
        i = 256 - (t ^ self._int_id).bit_length()
        key = lambda n: n.int_id ^ t  # noqa: E731
        out: list[Node] = sorted(rows.get(i, ()), key=key)
        if len(out) < k:
            deeper = [n for j, row in rows.items() if j > i for n in row]
            deeper.sort(key=key)
            out += deeper
        j = i - 1
        while len(out) < k and j >= 0:
            row = rows.get(j)
            if row:
                out += sorted(row, key=key)
            j -= 1
        return out[:k]

    def oldest(self, count: int) -> list[Node]:
        """The `count` least-recently-pinged members (for the periodic liveness ping)."""
        import heapq
        return heapq.nsmallest(count, self._by_id.values(), key=lambda n: n.pinged)

    def random_node(self, rng) -> Node | None:
        if not self._by_id:
            return None
        return rng.choice(list(self._by_id.values()))
