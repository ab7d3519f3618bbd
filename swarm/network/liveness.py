"""Notice when this peer was frozen (laptop lid closed, SIGSTOP) or lost the network, and get it back in the swarm.

A thread ticks every second on the boot-time clock (CLOCK_BOOTTIME keeps counting through a suspend, unlike
CLOCK_MONOTONIC): a tick that comes many seconds late means the whole peer was frozen. Every few seconds (and
right after a freeze) it counts the p2pd's open connections; with none left the peer has lost the swarm, says so
and reconnects to its initial peers with backoff (5 s doubling to 60 s), forever, which also refills the DHT's
routing table (re-bootstrap); a DHT ping to one initial peer every check tells a dead link from one that only
looks open (two misses in a row count as offline). Callbacks (`on_resume`) hear about each comeback, e.g. for a stage to resync.
Servers that silently vanish after an outage and never re-bootstrap are Petals #254.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

TICK_S = 1.0
FROZEN_AFTER_S = 5.0  # a tick this late means we were frozen
CHECK_PERIOD_S = 5.0
RETRY_FIRST_S, RETRY_MAX_S = 5.0, 60.0
CALL_TIMEOUT_S = 15.0


def _clock() -> float:
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):  # not Linux
        return time.monotonic()


class Liveness:
    """Watches one DHT (its p2pd's connections) from a daemon thread; stops by itself when the DHT is gone."""

    def __init__(self, dht, initial_peers: Sequence[str], *, log: logging.Logger = logger) -> None:
        self.dht, self.initial_peers, self.log = dht, list(initial_peers), log
        self.on_resume: list[Callable[[str, float], None]] = []  # (why: "frozen" | "offline", seconds away)
        self.frozen_s = 0.0
        self.offline_s = 0.0
        self.comebacks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="swarm-liveness", daemon=True)

    def start(self) -> Liveness:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        last = next_check = _clock()
        offline_since: float | None = None
        retry_at, wait, misses = 0.0, RETRY_FIRST_S, 0
        while not self._stop.wait(TICK_S):
            now = _clock()
            late = now - last - TICK_S
            try:
                if late > FROZEN_AFTER_S:
                    self.frozen_s += late
                    self.log.warning("this peer was frozen (suspended or stopped) for %.0f s; checking its connections "
                                     "to the swarm", late)  # fmt: skip
                    next_check = now  # look at once
                    self._rebootstrap()  # peers may have dropped us meanwhile: be known again, forget our own bans
                    self._resumed("frozen", late)
                if now < next_check:
                    continue
                next_check = now + CHECK_PERIOD_S
                peers = self._connections()
                if peers is None:
                    return  # the DHT is gone: the peer is leaving
                if peers and not self._answers():  # connections that look open but carry nothing: a dead link
                    misses += 1
                    peers = 0 if misses >= 2 else peers
                else:
                    misses = 0
                if peers == 0:
                    if offline_since is None:
                        offline_since, retry_at, wait = now, now, RETRY_FIRST_S
                        self.log.warning("lost the swarm (no connection, or no initial peer answers a ping: "
                                         "network down?); reconnecting to the initial peers with growing pauses "
                                         "until one answers")  # fmt: skip
                    if now >= retry_at:
                        ok = self._rebootstrap()
                        if not ok:
                            self.log.warning(
                                "still offline after %.0f s; next try in %.0f s", now - offline_since, wait
                            )
                            retry_at, wait = now + wait, min(2 * wait, RETRY_MAX_S)
                            continue
                        peers = self._connections() or 0
                if peers and offline_since is not None:
                    away = now - offline_since
                    self.offline_s += away
                    self.log.info("back in the swarm after %.0f s offline (%d connections); DHT re-bootstrapped", away,
                                  peers)  # fmt: skip
                    offline_since = None
                    self._resumed("offline", away)
            finally:
                last = _clock()  # time spent in our own checks (timeouts when offline) is no freeze

    def _resumed(self, why: str, seconds: float) -> None:
        self.comebacks += 1
        for callback in list(self.on_resume):
            try:
                callback(why, seconds)
            except Exception:  # a callback must not stop the watcher
                self.log.exception("on_resume callback failed")

    def _connections(self) -> int | None:
        """Open p2pd connections, or None when the DHT is gone."""
        try:
            return self.dht.run_coroutine(_count_connections, return_future=True).result(CALL_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            if not self.dht.is_alive():
                return None
            self.log.debug("liveness: cannot count connections: %r", exc)
            return 0

    def _answers(self) -> bool:
        """Whether one of the initial peers answers a DHT ping now (the link carries traffic)."""
        if not self.initial_peers:
            return True
        self._next = (getattr(self, "_next", -1) + 1) % len(self.initial_peers)
        try:
            call = functools.partial(_ping, peer=self.initial_peers[self._next])
            return bool(self.dht.run_coroutine(call, return_future=True).result(CALL_TIMEOUT_S))
        except Exception as exc:  # noqa: BLE001
            self.log.debug("liveness: ping failed: %r", exc)
            return False

    def _rebootstrap(self) -> bool:
        try:
            call = functools.partial(_reconnect, peers=self.initial_peers)
            return bool(self.dht.run_coroutine(call, return_future=True).result(CALL_TIMEOUT_S * 2))
        except Exception as exc:  # noqa: BLE001 -- offline: every dial fails
            self.log.debug("liveness: re-bootstrap failed: %r", exc)
            return False


async def _count_connections(_dht, node) -> int:
    return len(await node.p2p.list_peers())


async def _ping(_dht, node, peer: str) -> bool:
    import asyncio

    from hivemind.p2p import PeerID

    peer_id = PeerID.from_base58(peer.rpartition("/p2p/")[2])
    return await asyncio.wait_for(node.protocol.call_ping(peer_id), 5) is not None


async def _reconnect(_dht, node, peers: list[str]) -> int:
    """Connect p2pd to each initial peer and ping it through the DHT protocol (refills the routing table); forget
    the DHT's bans of peers that did not answer while we were away (hivemind's blacklist backs off exponentially)."""
    import asyncio

    from hivemind.p2p import PeerID
    from multiaddr import Multiaddr

    node.blacklist.banned_peers.clear()
    node.blacklist.ban_counter.clear()
    answered = 0
    for maddr in peers:
        base, _, peer = maddr.rpartition("/p2p/")
        try:
            peer_id = PeerID.from_base58(peer)
            await asyncio.wait_for(node.p2p._client.connect(peer_id, [Multiaddr(base)]), 10)
            if await asyncio.wait_for(node.protocol.call_ping(peer_id), 10) is not None:
                answered += 1
        except Exception:  # noqa: BLE001,S112 -- that peer is unreachable; try the next
            continue
    return answered
