"""GossipSub through real py-libp2p sidecar processes: messages cross two hops, bad frames don't kill it."""

import asyncio

import pytest

from protocol.contribution import Contribution
from swarm.network.gossip import GossipError, GossipMessage, GossipSidecar, MessageKind

pytestmark = pytest.mark.integration

CONTRIB = Contribution(experiment=1, round=4, stage=0, peer="0x" + "11" * 20, root=99, norm_sq=12345)


async def test_contribution_reaches_a_peer_two_hops_away():
    async with GossipSidecar() as a, GossipSidecar() as b, GossipSidecar() as c:
        await b.connect(a.addrs[0])
        await c.connect(b.addrs[0])  # a and c never dial each other
        for g in (a, b, c):
            await g.subscribe("exp")
        await asyncio.sleep(1.5)  # let the mesh form (heartbeat 1 s)
        await a.publish(GossipMessage.for_contribution("exp", CONTRIB))
        got = await c.receive(timeout=20)
        assert got.kind is MessageKind.CONTRIBUTION
        assert got.contribution() == CONTRIB


async def test_malformed_message_is_dropped_and_channel_keeps_working():
    async with GossipSidecar() as a, GossipSidecar() as b:
        await b.connect(a.addrs[0])
        for g in (a, b):
            await g.subscribe("exp")
        await asyncio.sleep(1.5)
        # a raw publish that is not a GossipMessage
        await a._request("publish", topic="/swarm/exp/rounds/1", data=b"\x93garbage")
        await a.publish(GossipMessage.for_contribution("exp", CONTRIB))
        got = await b.receive(timeout=20)
        assert got.contribution() == CONTRIB
        assert b.dropped == 1


async def test_bad_address_is_a_clear_error_and_sidecar_survives():
    async with GossipSidecar(request_timeout=20) as a:
        with pytest.raises(GossipError):
            await a.connect("/ip4/127.0.0.1/tcp/1/p2p/12D3KooWJ757xeTk13e66vMzGCh4UxC7bLvFzMRJ1QaXj2f2s8xS")
        with pytest.raises(GossipError):
            await a.connect("not a multiaddr")
        await a.subscribe("exp")  # still answering


async def test_sidecar_exits_when_its_owner_closes_the_pipe():
    g = await GossipSidecar().start()
    proc = g._proc
    await g.shutdown()
    assert proc is not None and proc.returncode is not None
