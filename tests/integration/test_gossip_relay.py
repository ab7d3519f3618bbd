"""Gossip between stage peers found through the real DHT: sidecars discover each other from signed records."""

import time

import pytest

from protocol.contribution import Contribution
from swarm.network.dht import create_dht, visible_multiaddrs
from swarm.network.gossip.discovery import fetch_gossip_peers
from swarm.network.gossip.relay import GossipRelay

pytestmark = pytest.mark.integration

CONTRIB = Contribution(experiment=3, round=9, stage=1, peer="0x" + "42" * 20, root=7, norm_sq=11, chunk=2)


def _until(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return False


def test_relays_find_each_other_on_the_dht_and_carry_a_contribution():
    a = create_dht()
    b = None
    try:
        b = create_dht([str(m) for m in visible_multiaddrs(a)])
        # b's sidecar listens on every interface (swarm-peer's default --host 0.0.0.0): it must announce addresses
        # others can dial (its DHT's), never 0.0.0.0 (before the fix every sidecar listened on 127.0.0.1 only, so
        # peers on other hosts could not dial it)
        with GossipRelay(a, "gossiptest") as ra, GossipRelay(b, "gossiptest", host="0.0.0.0") as rb:
            assert rb.addrs and all("/0.0.0.0/" not in m and "/ip4/127.0.0.1/tcp/" in m for m in rb.addrs)
            assert _until(lambda: len(fetch_gossip_peers(b, "gossiptest")) == 2, 30)
            assert _until(lambda: bool(ra._dialed or rb._dialed), 30)
            # publish until the mesh carries it (GossipSub needs a heartbeat or two after the dial)
            assert _until(lambda: (ra.publish_contribution(CONTRIB), rb.last)[1] != {}, 30)
            assert rb.last[(9, 1, CONTRIB.peer)] == CONTRIB
            assert rb.heard["contribution"] >= 1
    finally:
        if b is not None:
            b.shutdown()
        a.shutdown()
