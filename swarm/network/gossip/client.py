"""Asyncio client of the GossipSub sidecar: start it, connect, subscribe, publish, receive typed messages."""

from __future__ import annotations

import asyncio
import itertools
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Self

from runtime.procs import ChildProcess
from swarm.errors import SwarmError
from swarm.network.gossip.framing import HEADER_SIZE, FrameError, decode_body, encode_frame, frame_length
from swarm.network.gossip.messages import GossipMessage, topic_for

logger = logging.getLogger(__name__)


class GossipError(SwarmError):
    """The gossip sidecar failed to start, answered with an error, or died."""


class GossipSidecar:
    """Owns one sidecar process. Use `async with GossipSidecar() as g:`; it is stopped on every path."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 30.0, request_timeout: float = 15.0
    ) -> None:
        self.host, self.port, self.start_timeout, self.request_timeout = host, port, start_timeout, request_timeout
        self.peer_id: str | None = None
        self.addrs: list[str] = []
        self._child: ChildProcess | None = None
        self._out: asyncio.StreamReader | None = None  # the sidecar's stdout: event frames
        self._in: asyncio.StreamWriter | None = None  # its stdin: command frames; closing it stops the sidecar
        self._reader_task: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._inbox: asyncio.Queue[GossipMessage] = asyncio.Queue(maxsize=10_000)
        self._ready: asyncio.Future | None = None
        self.dropped = 0  # malformed messages received and dropped

    async def start(self) -> Self:
        """Start the sidecar in its own session (a terminal's Ctrl-C reaches only the peer, which stops it) and
        wait until it listens; it gets SIGKILL if the thread that started it dies."""
        self._child = ChildProcess(
            [sys.executable, "-m", "swarm.network.gossip.sidecar", "--host", self.host, "--port", str(self.port)],
            name="gossip-sidecar", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
        ).start()
        loop = asyncio.get_running_loop()
        self._out = asyncio.StreamReader(limit=2**24, loop=loop)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self._out, loop=loop), self._child.stdout)
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop), self._child.stdin
        )
        self._in = asyncio.StreamWriter(transport, protocol, None, loop)
        self._ready = asyncio.get_running_loop().create_future()
        self._reader_task = asyncio.create_task(self._read_loop())
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), self.start_timeout)
        except (TimeoutError, GossipError) as exc:
            await self.shutdown()
            raise GossipError(f"gossip sidecar did not start in {self.start_timeout:.0f} s: {exc}") from exc
        self.peer_id, self.addrs = ready["peer_id"], list(ready["addrs"])
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.shutdown()

    async def _request(self, op: str, **fields) -> dict:
        if self._child is None or not self._child.alive or self._in is None:
            raise GossipError("gossip sidecar is not running")
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._in.write(encode_frame({"op": op, "id": rid, **fields}))
            await self._in.drain()
            return await asyncio.wait_for(fut, self.request_timeout)
        except TimeoutError as exc:
            raise GossipError(f"gossip sidecar did not answer {op!r} in {self.request_timeout:.0f} s") from exc
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise GossipError("gossip sidecar died") from exc
        finally:
            self._pending.pop(rid, None)

    async def connect(self, addr: str) -> None:
        """Dial another peer's sidecar (a multiaddr ending in /p2p/<id>)."""
        await self._request("connect", addr=addr)

    async def subscribe(self, experiment: str) -> None:
        await self._request("subscribe", topic=topic_for(experiment))

    async def publish(self, msg: GossipMessage) -> None:
        await self._request("publish", topic=topic_for(msg.experiment), data=msg.to_msgpack())

    async def receive(self, timeout: float | None = None) -> GossipMessage:
        return await asyncio.wait_for(self._inbox.get(), timeout)

    async def messages(self) -> AsyncIterator[GossipMessage]:
        while True:
            yield await self._inbox.get()

    async def _read_loop(self) -> None:
        assert self._out is not None
        out = self._out
        try:
            while True:
                header = await out.readexactly(HEADER_SIZE)
                event = decode_body(await out.readexactly(frame_length(header)))
                self._dispatch(event)
        except (asyncio.IncompleteReadError, FrameError, ConnectionError) as exc:
            err = GossipError(f"gossip sidecar stopped: {exc}")
            if self._ready is not None and not self._ready.done():
                self._ready.set_exception(err)
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(err)

    def _dispatch(self, event: dict) -> None:
        ev = event.get("ev")
        if ev == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(event)
        elif ev == "message":
            try:
                msg = GossipMessage.from_msgpack(event.get("data", b""))
            except ValueError as exc:
                self.dropped += 1
                logger.warning("dropped a malformed gossip message from %s: %s", event.get("from"), exc)
                return
            if self._inbox.full():
                self._inbox.get_nowait()  # keep the newest: round news goes stale
                self.dropped += 1
            self._inbox.put_nowait(msg)
        elif ev == "error" and event.get("id") is None:
            logger.warning("gossip sidecar: %s", event.get("message"))
        else:
            fut = self._pending.get(event.get("id"))  # type: ignore[arg-type]
            if fut is not None and not fut.done():
                if ev == "error":
                    fut.set_exception(GossipError(str(event.get("message"))))
                else:
                    fut.set_result(event)

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Close the sidecar's stdin (it exits by itself), wait up to `timeout` s, then end its whole group."""
        child, writer, self._child, self._in = self._child, self._in, None, None
        if writer is not None:
            writer.close()  # the sidecar exits when its stdin closes
        if child is not None and await asyncio.to_thread(child.wait, timeout) is None:
            logger.warning("gossip sidecar did not exit %.0f s after its pipe closed; killing it", timeout)
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        if child is not None:
            await asyncio.to_thread(child.stop, 0.0)  # SIGTERM/SIGKILL what is left of its group, close its pipes
