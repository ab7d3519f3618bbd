"""GossipRelay: a stage peer's gossip, usable from synchronous code (its sidecar runs on a loop in a thread).

It announces its sidecar on the DHT, dials the sidecars other peers announce, publishes the peer's round records
(contributions and audit answers) and keeps count of what it hears, dropping malformed messages.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Self

import hivemind

from protocol.contribution import Contribution, ContributionError
from runtime.loops import LoopThread, StartStop
from swarm.network.gossip.client import GossipError, GossipSidecar
from swarm.network.gossip.discovery import announce_gossip, fetch_gossip_peers
from swarm.network.gossip.messages import GossipMessage, MessageKind

logger = logging.getLogger(__name__)

REFRESH_S = 10.0
CALL_TIMEOUT_S = 20.0


def announced_addrs(sidecar_addrs: list[str], host: str, dht_addrs: list[str]) -> list[str]:
    """What to announce on the DHT for a sidecar listening on `host`: its own addresses, except that a wildcard
    (0.0.0.0) is replaced by each IPv4 address the peer's DHT is visible at (others cannot dial 0.0.0.0)."""
    out: list[str] = []
    for addr in sidecar_addrs:
        parts = addr.split("/")  # ['', 'ip4', IP, 'tcp', PORT, 'p2p', ID]
        if len(parts) < 5 or parts[1] != "ip4" or parts[2] != "0.0.0.0":
            out.append(addr)
            continue
        for visible in dht_addrs:
            v = visible.split("/")
            if len(v) > 2 and v[1] == "ip4" and v[2] != "0.0.0.0":
                out.append("/".join(["", "ip4", v[2], *parts[3:]]))
    return list(dict.fromkeys(out))[:8]  # a DHT endpoint record holds at most 8


class GossipRelay(StartStop):
    """`with GossipRelay(dht, experiment, host=...) as relay: relay.publish_contribution(c)`; stopped on every path.

    The sidecar listens on `host` (the peer's own listen address, e.g. swarm-peer's --host; 127.0.0.1 by default:
    this machine only) and announces the addresses other hosts can dial."""

    def __init__(self, dht: hivemind.DHT, experiment: str, *, host: str = "127.0.0.1") -> None:
        self.dht, self.experiment, self.host = dht, experiment, host
        self.addrs: list[str] = []
        self.heard: Counter[str] = Counter()  # message kind -> count of valid messages received
        self.last: dict[tuple[int, int, str], Contribution] = {}  # (round, stage, peer) -> latest heard
        # called with every valid message, on the gossip loop (must not block), e.g. swarm.settlement.watcher
        self.listeners: list[Callable[[GossipMessage], None]] = []
        self._loop: LoopThread | None = None
        self._sidecar: GossipSidecar | None = None
        self._dialed: set[str] = set()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> Self:
        self._loop = LoopThread(name="gossip-loop")
        try:
            self._sidecar = self._loop.run(self._start_sidecar(), timeout=60)
        except BaseException:
            self.shutdown()
            raise
        self._loop.submit(self._receive_forever())
        self._refresher = threading.Thread(target=self._refresh_forever, name="gossip-refresh", daemon=True)
        self._refresher.start()
        return self

    async def _start_sidecar(self) -> GossipSidecar:
        sidecar = await GossipSidecar(host=self.host).start()
        await sidecar.subscribe(self.experiment)
        self.addrs = announced_addrs(sidecar.addrs, self.host, [str(m) for m in self.dht.get_visible_maddrs()])
        return sidecar

    def shutdown(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout=CALL_TIMEOUT_S)
        if self._loop is not None:
            if self._sidecar is not None:
                try:
                    self._loop.run(self._sidecar.shutdown(), timeout=15)
                except (TimeoutError, RuntimeError) as exc:
                    logger.warning("gossip sidecar did not stop cleanly: %s", exc)
            self._loop.stop()
            self._loop = None

    def refresh(self) -> int:
        """Re-announce our sidecar and dial the ones we have not dialed yet; returns how many were dialed now."""
        assert self._sidecar is not None and self._loop is not None
        announce_gossip(self.dht, self.experiment, self.addrs or self._sidecar.addrs)
        dialed = 0
        ours = set(self.addrs) | set(self._sidecar.addrs)
        for maddrs in fetch_gossip_peers(self.dht, self.experiment).values():
            if any(a in self._dialed or a in ours for a in maddrs):
                continue
            for addr in maddrs:  # the first address that answers (a peer on several interfaces announces each)
                try:
                    self._loop.run(self._sidecar.connect(addr), timeout=CALL_TIMEOUT_S)
                except (GossipError, TimeoutError) as exc:
                    logger.info("could not dial gossip peer %s: %s", addr, exc)
                    continue
                self._dialed.add(addr)
                dialed += 1
                break
        return dialed

    def publish_contribution(self, c: Contribution, *, audit: bool = False) -> None:
        """Tell the swarm about our round record (fire and forget; a failure is logged, never raised)."""
        if self._sidecar is None or self._loop is None:
            return
        msg = GossipMessage.for_contribution(self.experiment, c, audit=audit)
        fut = self._loop.submit(self._sidecar.publish(msg))
        fut.add_done_callback(lambda f: f.exception() and logger.info("gossip publish failed: %s", f.exception()))

    def publish_evidence(self, accusation) -> None:
        """Tell the swarm that a peer of our group cheated (a `swarm.rounds.parts.Accusation`); fire and forget."""
        if self._sidecar is None or self._loop is None:
            return
        msg = GossipMessage.for_evidence(self.experiment, accusation.round, accusation.stage, accusation.to_bytes())
        fut = self._loop.submit(self._sidecar.publish(msg))
        fut.add_done_callback(lambda f: f.exception() and logger.info("gossip publish failed: %s", f.exception()))

    def publish_certificate(self, body: bytes, round: int, stage: int) -> None:
        """Tell the swarm our signature of a (round, stage) certificate (swarm/settlement/certificate.py)."""
        if self._sidecar is None or self._loop is None:
            return
        msg = GossipMessage.for_certificate(self.experiment, round, stage, body)
        fut = self._loop.submit(self._sidecar.publish(msg))
        fut.add_done_callback(lambda f: f.exception() and logger.info("gossip publish failed: %s", f.exception()))

    def _refresh_forever(self) -> None:
        while not self._stop.wait(0 if not self._dialed else REFRESH_S):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 -- the DHT may be shutting down; try again next time
                logger.info("gossip refresh failed: %s", exc)
            if not self._dialed:
                self._stop.wait(1.0)

    async def _receive_forever(self) -> None:
        assert self._sidecar is not None
        while True:
            msg = await self._sidecar.receive()
            if msg.kind in (MessageKind.CONTRIBUTION, MessageKind.AUDIT_PROOF):
                try:
                    c = msg.contribution()
                except ContributionError as exc:
                    logger.info("dropped a gossip %s with a malformed record: %s", msg.kind.value, exc)
                    continue
                with self._lock:
                    self.last[(c.round, c.stage, c.peer)] = c
            with self._lock:
                self.heard[msg.kind.value] += 1
            for listener in self.listeners:
                try:
                    listener(msg)
                except Exception:  # a listener's bug must not stop the relay
                    logger.exception("gossip listener %r failed", listener)
