"""Stage choice and rebalancing decisions, from announcement tables alone."""

from __future__ import annotations

import pytest
from hivemind.p2p import PeerID

from swarm.network.records import StageAnnouncement
from swarm.pipeline.stage_choice import _designated_mover, choose_stage, rebalance_target, stage_totals

PEER_IDS = [PeerID(b"\x00\x10" + bytes([i + 1]) * 16).to_base58() for i in range(8)]


def table(*stages: list[float]) -> dict[int, list[StageAnnouncement]]:
    """table([10, 5], [3]): stage 0 has peers of 10 and 5 samples/s, stage 1 one peer of 3."""
    out, i = {}, 0
    for s, throughputs in enumerate(stages):
        for t in throughputs:
            out.setdefault(s, []).append(
                StageAnnouncement(peer_id=PEER_IDS[i], stage=s, throughput=t, load=0, params_version=0)
            )
            i += 1
    return out


def test_joiner_takes_the_stage_with_least_throughput():
    assert choose_stage(table([10.0], [3.0], [7.0]), 3) == 1


def test_joiner_takes_an_empty_stage_first():
    assert choose_stage(table([10.0], [3.0]), 3) == 2
    assert choose_stage({}, 4) == 0


def test_ties_go_to_fewer_peers_then_lower_index():
    assert choose_stage(table([5.0, 5.0], [10.0]), 2) == 1
    assert choose_stage(table([5.0], [5.0]), 2) == 0


def test_announcements_beyond_the_stage_count_are_ignored():
    anns = table([1.0], [1.0], [0.5])
    assert stage_totals(anns, 2) == [1.0, 1.0]
    assert choose_stage(anns, 2) == 0


def test_stage_count_must_be_positive():
    with pytest.raises(ValueError, match="at least one stage"):
        choose_stage({}, 0)


def test_rebalance_moves_from_crowded_to_starved_stage():
    anns = table([10.0, 10.0, 10.0], [5.0])
    assert rebalance_target(0, anns, 2, my_throughput=10.0) == 1


def test_rebalance_never_leaves_a_stage_without_peers():
    anns = table([10.0], [1.0])
    assert rebalance_target(0, anns, 2, my_throughput=10.0) is None


def test_rebalance_needs_a_clear_gain():
    # moving 2 samples/s from stage 0 (12) to stage 1 (10) lowers the minimum: stay
    assert rebalance_target(0, table([10.0, 2.0], [10.0]), 2, my_throughput=2.0) is None
    # a small gain under the hysteresis: stay; the same move with no hysteresis: go
    anns = table([10.0, 10.0, 1.0], [18.0])  # moving 1: minimum 18 -> 19, a 5.6% gain
    assert rebalance_target(0, anns, 2, my_throughput=1.0) is None
    assert rebalance_target(0, anns, 2, my_throughput=1.0, hysteresis=0.0) == 1


def test_rebalance_fills_an_empty_stage():
    assert rebalance_target(0, table([3.0, 3.0], [4.0]), 3) == 2


def test_only_one_designated_peer_of_a_stage_moves():
    anns = table([10.0, 10.0, 10.0], [1.0])
    movers = [a.peer_id for a in anns[0] if rebalance_target(0, anns, 2, my_peer_id=a.peer_id) is not None]
    assert len(movers) == 1


def test_rebalance_uses_my_own_announced_throughput():
    anns = table([30.0, 2.0], [9.0])
    # moving the 2 samples/s peer: minimum 9 -> 11 (a gain); moving the 30 samples/s one: minimum 9 -> 2 (a loss)
    assert rebalance_target(0, anns, 2, my_throughput=2.0) == 1
    assert rebalance_target(0, anns, 2, my_throughput=30.0) is None
    mover = next(a for a in anns[0] if a.peer_id == _designated_mover(anns[0]))
    other = next(a for a in anns[0] if a is not mover)
    assert rebalance_target(0, anns, 2, my_peer_id=mover.peer_id) == (1 if mover.throughput == 2.0 else None)
    assert rebalance_target(0, anns, 2, my_peer_id=other.peer_id) is None


def test_rebalance_from_a_stage_out_of_range_stays():
    assert rebalance_target(5, table([1.0, 1.0], [1.0]), 2) is None
