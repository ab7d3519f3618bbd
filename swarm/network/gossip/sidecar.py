"""The GossipSub sidecar process: a py-libp2p host with GossipSub, driven by msgpack frames on stdin/stdout.

Run by `GossipSidecar` (client.py), never by hand. Commands in: connect, subscribe, publish, close. Events out:
ready, message, connected, error. It exits when stdin closes, so it never outlives its peer.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import multiaddr
import trio
from libp2p import new_host
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from swarm.network.gossip.framing import HEADER_SIZE, FrameError, decode_body, encode_frame, frame_length

logger = logging.getLogger("swarm.network.gossip.sidecar")


class _Pipe:
    """Async framed I/O over the process's stdin/stdout."""

    def __init__(self) -> None:
        self._in = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        self._out = trio.lowlevel.FdStream(os.dup(sys.stdout.fileno()))
        self._buf = bytearray()
        self._lock = trio.Lock()

    async def _read_exact(self, n: int) -> bytes | None:
        while len(self._buf) < n:
            chunk = await self._in.receive_some(65536)
            if not chunk:
                return None
            self._buf += chunk
        out, self._buf = bytes(self._buf[:n]), self._buf[n:]
        return out

    async def read(self) -> dict | None:
        header = await self._read_exact(HEADER_SIZE)
        if header is None:
            return None
        body = await self._read_exact(frame_length(header))
        return None if body is None else decode_body(body)

    async def write(self, obj: dict) -> None:
        async with self._lock:
            await self._out.send_all(encode_frame(obj))


async def _pump_topic(pipe: _Pipe, topic: str, subscription) -> None:
    async for msg in subscription:
        await pipe.write({"ev": "message", "topic": topic, "data": bytes(msg.data), "from": msg.from_id.hex()})


async def _handle(cmd: dict, pipe: _Pipe, host, pubsub: Pubsub, nursery: trio.Nursery) -> bool:
    op = cmd.get("op")
    if op == "connect":
        info = info_from_p2p_addr(multiaddr.Multiaddr(str(cmd["addr"])))
        with trio.fail_after(float(cmd.get("timeout", 10.0))):
            await host.connect(info)
        await pipe.write({"ev": "connected", "addr": str(cmd["addr"]), "id": cmd.get("id")})
    elif op == "subscribe":
        topic = str(cmd["topic"])
        sub = await pubsub.subscribe(topic)
        nursery.start_soon(_pump_topic, pipe, topic, sub)
        await pipe.write({"ev": "subscribed", "topic": topic, "id": cmd.get("id")})
    elif op == "publish":
        data = cmd["data"]
        if not isinstance(data, bytes):
            raise FrameError("publish needs bytes in 'data'")
        await pubsub.publish(str(cmd["topic"]), data)
        await pipe.write({"ev": "published", "id": cmd.get("id")})
    elif op == "close":
        return False
    else:
        raise FrameError(f"unknown op {op!r}")
    return True


async def serve(port: int, heartbeat: int, host: str = "127.0.0.1") -> None:
    pipe = _Pipe()
    listen = multiaddr.Multiaddr(f"/ip4/{host}/tcp/{port}")
    host = new_host(listen_addrs=[listen])
    router = GossipSub(
        protocols=[PROTOCOL_ID_V11, PROTOCOL_ID], degree=6, degree_low=4, degree_high=12,
        heartbeat_interval=heartbeat, heartbeat_initial_delay=0.1,
    )
    pubsub = Pubsub(host, router)
    async with host.run(listen_addrs=[listen]), background_trio_service(pubsub), background_trio_service(router):
        await pubsub.wait_until_ready()
        addrs = [f"{a}" if "/p2p/" in str(a) else f"{a}/p2p/{host.get_id()}" for a in host.get_addrs()]
        await pipe.write({"ev": "ready", "peer_id": str(host.get_id()), "addrs": addrs})
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    cmd = await pipe.read()
                except FrameError as exc:
                    await pipe.write({"ev": "error", "message": str(exc), "id": None})
                    break  # the stream is out of sync: stop rather than guess
                if cmd is None:
                    break
                try:
                    if not await _handle(cmd, pipe, host, pubsub, nursery):
                        break
                except Exception as exc:  # noqa: BLE001 -- one bad command must not take the sidecar down
                    await pipe.write({"ev": "error", "message": f"{type(exc).__name__}: {exc}", "id": cmd.get("id")})
            nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--heartbeat", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 address to listen on (0.0.0.0: every interface)")
    args = parser.parse_args()
    logging.basicConfig(level=os.environ.get("SWARM_GOSSIP_LOG", "WARNING"), stream=sys.stderr)
    trio.run(serve, args.port, args.heartbeat, args.host)


if __name__ == "__main__":
    main()
