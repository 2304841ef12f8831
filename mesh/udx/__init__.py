"""UDX: reliable streams over UDP, wire-compatible with libudx (udx-native).

packet.py      the 20-byte header codec and SACK blocks            (sans-IO)
scoreboard.py  sender state: acks, SACK, loss detection, RTT/RTO, AIMD  (sans-IO)
engine.py      one stream's protocol engine: `UDXEngine`, `UDXConfig` (sans-IO)
stream.py      `UDXStream`: the asyncio stream around an engine
mux.py         `UDXMux`: routes datagrams by stream id; owns no socket
fastnet.py     `BatchUDPNetwork`: a mesh.net Network that drains its socket in batches
"""

from .engine import UDXConfig, UDXEngine
from .mux import UDXMux
from .stream import UDXStream

__all__ = ["UDXConfig", "UDXEngine", "UDXMux", "UDXStream"]
