"""The watcher's pure parts: the duty order every watcher computes alike, the record commitment it compares
gossiped proofs with, and the lines a peer prints for its watcher's events."""

from __future__ import annotations

import os

from eth_utils import keccak

from swarm.apps.events import Settled
from swarm.apps.view.render import event_line
from swarm.apps.view.state import PeerState
from swarm.settlement.watcher import commitment_of, duty_rank

WATCHERS = {"0x" + os.urandom(20).hex() for _ in range(6)}


def test_every_watcher_computes_the_same_order_and_each_holds_one_rank():
    key = os.urandom(32)
    ranks = {w: duty_rank(key, w, WATCHERS) for w in WATCHERS}
    assert sorted(ranks.values()) == list(range(len(WATCHERS)))  # a permutation: exactly one rank 0
    first = min(WATCHERS, key=lambda w: keccak(key + bytes.fromhex(w[2:])))
    assert ranks[first] == 0
    assert duty_rank(key, first, WATCHERS - {first}) == 0  # a watcher outside the set counts itself in


def test_the_order_changes_with_the_seed():
    orders = {tuple(sorted(WATCHERS, key=lambda w: duty_rank(seed, w, WATCHERS)))
              for seed in (os.urandom(32) for _ in range(20))}  # fmt: skip
    assert len(orders) > 1  # no watcher is first for every round


def test_commitment_is_the_escrows_192_bit_hash_and_never_zero():
    c = commitment_of(4242, 100)
    assert 0 < c < 1 << 192 and c != commitment_of(4242, 101) and c != commitment_of(4243, 100)


def test_a_peer_prints_its_watchers_audits_and_slashes():
    s = PeerState(role="stage")
    opened = Settled(action="audit_opened", round=7, stage=0, detail={"peer": "0xabc", "j": 0, "chunk": 19})
    slashed = Settled(action="slashed", round=7, stage=0,
                      detail={"peer": "0xabc", "reporter": "0xdef", "reward": str(2 * 10**18)})  # fmt: skip
    for e in (opened, slashed):
        s.apply(e)
    assert event_line(s, opened) == "round 7: watcher opened audit 0 of 0xabc, chunk 19 (its proof never came)"
    line = event_line(s, slashed)
    assert line is not None and line.startswith("round 7: watcher slashed 0xabc; reporter 0xdef paid 2")
