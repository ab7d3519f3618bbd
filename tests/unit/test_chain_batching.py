"""The batch duty order is the same for every peer that heard the same contributors, whatever the order it heard
them in, and changes from round to round."""

from __future__ import annotations

from eth_abi import encode
from eth_utils import keccak

from swarm.chain.batching import duty_order, duty_time
from swarm.chain.safety import INCLUSION_MARGIN_S

PEERS = [f"0x{i:040x}" for i in range(1, 9)]


def test_every_peer_computes_the_same_order() -> None:
    first = duty_order(3, 7, PEERS)
    assert duty_order(3, 7, reversed(PEERS)) == first
    assert duty_order(3, 7, PEERS + PEERS[:3]) == first  # heard twice: still once
    assert len(first) == len(PEERS) and {p.lower() for p in first} == set(PEERS)
    head = min(PEERS, key=lambda p: keccak(encode(["uint256", "uint256", "address"], [3, 7, p])))
    assert first[0].lower() == head


def test_the_duty_rotates_with_the_round() -> None:
    heads = {duty_order(3, r, PEERS)[0] for r in range(40)}
    assert len(heads) >= 4  # 40 rounds, 8 peers: the first place moves around


def test_duty_times_start_mid_window_and_stop_one_margin_before_its_end() -> None:
    assert duty_time(0, 1_000, 1_100) == 1_050
    assert duty_time(1, 1_000, 1_100) == 1_050 + INCLUSION_MARGIN_S
    assert duty_time(50, 1_000, 1_100) == 1_100 - INCLUSION_MARGIN_S
