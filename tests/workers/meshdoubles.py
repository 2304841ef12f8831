"""Recording stand-ins for mesh.swarm.Swarm and mesh.rpc.RpcServer.

Used only until the lead wires the real ones: they record what a worker asks of
the mesh (joins, leaves, registered methods) so lifecycle order can be checked.
"""

from __future__ import annotations



class Discovery:
    def __init__(self):
        self.flushed_calls = 0

    async def flushed(self):
        self.flushed_calls += 1


class RecordingSwarm:
    def __init__(self):
        self.events: list[tuple[str, bytes]] = []
        self.joined: set[bytes] = set()
        self.callbacks = []

    def join(self, topic, *, server=True, client=True):
        assert server and not client
        self.events.append(("join", topic))
        self.joined.add(topic)
        return Discovery()

    async def leave(self, topic):
        self.events.append(("leave", topic))
        self.joined.discard(topic)

    def on_connection(self, cb):
        self.callbacks.append(cb)


class RecordingRpc:
    def __init__(self):
        self.handlers = {}
        self.attached = []

    def respond(self, method, handler, encoding="msgpack", in_task=True):
        self.handlers[method] = (handler, encoding)
        self.in_task = getattr(self, "in_task", {})
        self.in_task[method] = in_task

    def attach(self, conn):
        self.attached.append(conn)


class Mesh:
    def __init__(self):
        self.swarm = RecordingSwarm()
        self.rpc = RecordingRpc()
