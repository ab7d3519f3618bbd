"""GossipSub through real py-libp2p sidecar processes: messages cross two hops, bad frames don't kill it."""

import asyncio
import os
import time

import pytest

from protocol.contribution import Contribution
from swarm.network.gossip import GossipError, GossipMessage, GossipSidecar, MessageKind

pytestmark = pytest.mark.integration

CONTRIB = Contribution(experiment=1, round=4, stage=0, peer="0x" + "11" * 20, root=99, norm_sq=12345)
MESH_TIMEOUT_S = 30.0  # GossipSub needs a heartbeat or two (1 s each) after the dial before it forwards


async def publish_until_received(sender: GossipSidecar, receiver: GossipSidecar, msg: GossipMessage,
                                 before=None) -> GossipMessage:  # fmt: skip
    """Publish `msg` (after `before()`, if given) once a second until `receiver` hears it: the mesh may be forming."""
    deadline = time.monotonic() + MESH_TIMEOUT_S
    while True:
        if before is not None:
            await before()
        await sender.publish(msg)
        try:
            return await receiver.receive(timeout=1.0)
        except TimeoutError:
            assert time.monotonic() < deadline, f"nothing arrived in {MESH_TIMEOUT_S:.0f} s"


async def test_contribution_reaches_a_peer_two_hops_away():
    async with GossipSidecar() as a, GossipSidecar() as b, GossipSidecar() as c:
        await b.connect(a.addrs[0])
        await c.connect(b.addrs[0])  # a and c never dial each other
        for g in (a, b, c):
            await g.subscribe("exp")
        got = await publish_until_received(a, c, GossipMessage.for_contribution("exp", CONTRIB))
        assert got.kind is MessageKind.CONTRIBUTION
        assert got.contribution() == CONTRIB


async def test_malformed_message_is_dropped_and_channel_keeps_working():
    async with GossipSidecar() as a, GossipSidecar() as b:
        await b.connect(a.addrs[0])
        for g in (a, b):
            await g.subscribe("exp")
        valid = GossipMessage.for_contribution("exp", CONTRIB)

        async def garbage() -> None:  # a raw publish that is not a GossipMessage
            await a._request("publish", topic="/swarm/exp/rounds/1", data=b"\x93garbage")

        got = await publish_until_received(a, b, valid, before=garbage)
        assert got.contribution() == CONTRIB
        deadline = time.monotonic() + MESH_TIMEOUT_S
        while b.dropped == 0:  # the garbage may arrive after the valid message it was published before
            assert time.monotonic() < deadline, "the malformed message never arrived"
            await asyncio.sleep(0.1)
        assert (await publish_until_received(a, b, valid)).contribution() == CONTRIB  # still working


async def test_bad_address_is_a_clear_error_and_sidecar_survives():
    async with GossipSidecar(request_timeout=20) as a:
        with pytest.raises(GossipError):
            await a.connect("/ip4/127.0.0.1/tcp/1/p2p/12D3KooWJ757xeTk13e66vMzGCh4UxC7bLvFzMRJ1QaXj2f2s8xS")
        with pytest.raises(GossipError):
            await a.connect("not a multiaddr")
        await a.subscribe("exp")  # still answering


async def test_sidecar_exits_by_itself_when_its_owner_closes_the_pipe():
    g = await GossipSidecar().start()
    child = g._child
    assert child is not None and child.alive
    try:
        g._in.close()  # what happens when the owner goes away: its end of the pipe closes
        assert await asyncio.to_thread(child.wait, 20) == 0  # it left by itself, before any kill
    finally:
        await g.shutdown()


async def test_sidecar_runs_in_its_own_session_so_a_terminals_ctrl_c_reaches_only_the_peer():
    async with GossipSidecar() as g:
        assert g._child is not None
        assert os.getsid(g._child.pid) == g._child.pid != os.getsid(0)
