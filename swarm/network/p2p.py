"""A private client of the DHT's own p2pd (hivemind-specific), for the stage server and the router."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from runtime.loops import LoopThread

T = TypeVar("T")
logger = logging.getLogger(__name__)


class P2PClient:
    """A private client of the DHT's own p2pd, driven from its own event-loop thread (one per server/router)."""

    def __init__(self, dht, name: str, timeout: float = 30.0) -> None:
        from hivemind.p2p import P2P

        self.loop = LoopThread(name)
        try:
            maddr = dht.run_coroutine(daemon_listen_maddr)
            self.p2p: P2P = self.loop.run(P2P.replicate(maddr), timeout)
        except BaseException:
            self.loop.stop()
            raise

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.loop.run(coro, timeout)

    def close(self, before: Coroutine[Any, Any, Any] | None = None) -> None:
        """Run `before` (e.g. removing handlers), close the p2pd client and stop the loop; never raises."""
        for coro in (before, self.p2p.shutdown()):
            if coro is None:
                continue
            try:
                self.loop.run(coro, 5.0)
            except Exception as exc:  # noqa: BLE001 - the daemon may be gone already
                logger.debug("closing p2p client: %r", exc)
        self.loop.stop()


async def daemon_listen_maddr(_dht, node):
    """Runs inside the DHT process: the multiaddr where its p2pd listens for clients."""
    return node.p2p.daemon_listen_maddr
