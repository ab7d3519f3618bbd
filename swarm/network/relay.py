"""Serving from behind a NAT through a libp2p circuit relay (relay v2, inside hivemind's p2pd).

What we measured on emulated hosts (experiments/netlab.py; hivemind 1.1.12's p2pd, go-libp2p's circuit v2):

- Every p2pd starts with the relay *service* switched on (`-relayService`, default true), but go-libp2p only runs
  it while the host believes it is publicly reachable (AutoNAT). On a small swarm AutoNAT rarely gets the dial-backs
  it needs, and the bootstrap then refuses reservations (NO_RESERVATION). So a bootstrap peer is started with
  `force_reachability="public"`: **the bootstrap relays by default**; other public peers relay only once AutoNAT
  has confirmed them public.
- On the NATed side `use_auto_relay=True` with p2pd's default relay *discovery* waits for 4 candidates or 3 minutes
  before it reserves a slot (over 3.5 minutes in our runs, nothing reserved). With discovery off, the trusted
  relays (our initial peers) are used at once: reservation within a second. hivemind 1.1.12 does not expose
  p2pd's `-relayDiscovery` flag, so `relayed_options` adds it to the daemon's arguments (`_static_relays`).
- The relayed peer's own address list (identify) does not show its `/p2p-circuit` address, and the libp2p DHT's
  peer routing did not find one either: other peers only tried its private address. So the relayed peer publishes
  `<relay>/p2p-circuit` on the DHT (key `RELAYED_KEY`, subkey = its peer id), and every peer's DHT process runs a
  dialer (`start_relay_dialer`) that connects its p2pd to relayed peers through their relay. Once connected, every
  hivemind call by peer id (DHT, averaging, stage RPCs) uses that connection. A direct call through the relay
  took 0.6 s the first time (circuit set-up) on the lab.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

logger = logging.getLogger(__name__)

RELAYED_KEY = "swarm_relayed_peers"
PUBLISH_PERIOD_S = 15.0
RECORD_TTL_S = 45.0
DIAL_PERIOD_S = 3.0


def relay_service_options() -> dict:
    """DHT options of a peer that others reach directly and that should relay for NATed peers (the bootstrap)."""
    return {"force_reachability": "public"}


def relayed_options(relays: Sequence[str]) -> dict:
    """DHT options of a peer behind a NAT that serves through `relays` (multiaddrs of public peers)."""
    _static_relays()
    return {
        "use_auto_relay": True, "use_relay": True, "force_reachability": "private", "trusted_relays": list(relays),
        "client_mode": True,  # its DHT asks, never answers: DHT requests need no way in
    }  # fmt: skip


def _static_relays() -> None:
    """Make p2pd use the trusted relays at once (`-relayDiscovery=0`) whenever auto-relay is on.

    hivemind 1.1.12's P2P.create has no parameter for it; its daemon command line is built by the static method
    `P2P._make_process_args`, which we wrap once per process (the DHT process is forked from ours and inherits it).
    """
    from hivemind.p2p.p2p_daemon import P2P

    original = P2P._make_process_args
    if getattr(original, "_swarm_static_relays", False):
        return

    def make_process_args(*args, **kwargs):
        if kwargs.get("autoRelay"):
            kwargs.setdefault("relayDiscovery", False)
        return original(*args, **kwargs)

    make_process_args._swarm_static_relays = True
    P2P._make_process_args = staticmethod(make_process_args)


def circuit_addresses(relays: Sequence[str]) -> list[str]:
    """Our addresses through each relay: `<relay multiaddr>/p2p-circuit` (the caller appends /p2p/<us>)."""
    return [f"{r}/p2p-circuit" for r in relays]


def publish_relayed(dht, relays: Sequence[str]) -> None:
    """Keep our circuit addresses on the DHT (re-published in the DHT process until it stops)."""
    dht.run_coroutine(
        functools.partial(_publish_forever, circuits=circuit_addresses(relays)), return_future=True
    )


async def _publish_forever(_dht, node, circuits: list[str]) -> None:
    from hivemind.utils import get_dht_time

    me = node.peer_id.to_base58()
    while True:
        try:
            await node.store(
                RELAYED_KEY, subkey=me, value=circuits, expiration_time=get_dht_time() + RECORD_TTL_S
            )
        except Exception as exc:  # noqa: BLE001 -- the next round tries again
            logger.debug("publishing relayed address failed: %r", exc)
        await asyncio.sleep(PUBLISH_PERIOD_S)


def start_relay_dialer(dht) -> None:
    """In the DHT process: every few seconds, connect to relayed peers we are not connected to (until it stops)."""
    dht.run_coroutine(_dial_forever, return_future=True)


async def _dial_forever(_dht, node) -> None:
    while True:
        try:
            await dial_relayed_once(node)
        except Exception as exc:  # noqa: BLE001 -- a relay or peer that left; the next round tries again
            logger.debug("relay dialer: %r", exc)
        await asyncio.sleep(DIAL_PERIOD_S)


async def dial_relayed_once(node) -> list[str]:
    """Connect to every relayed peer on the DHT that we have no connection to; returns the peer ids dialled."""
    from hivemind.p2p import PeerID
    from multiaddr import Multiaddr

    found = await node.get(RELAYED_KEY, latest=True)
    if found is None or not isinstance(found.value, dict):
        return []
    me = node.peer_id.to_base58()
    connected = {info.peer_id.to_base58() for info in await node.p2p.list_peers()}
    dialled = []
    for subkey, entry in found.value.items():
        peer, circuits = str(subkey), getattr(entry, "value", None)
        if peer == me or peer in connected or not isinstance(circuits, list):
            continue
        try:
            addrs = [Multiaddr(str(c)) for c in circuits[:4]]
            await asyncio.wait_for(node.p2p._client.connect(PeerID.from_base58(peer), addrs), 10)
            dialled.append(peer)
            logger.info("connected to %s through its relay", peer[-8:])
        except Exception as exc:  # noqa: BLE001
            logger.debug("could not reach relayed peer %s: %r", peer[-8:], exc)
    return dialled
