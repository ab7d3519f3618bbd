"""Verified rounds without the network: parts and their checks, accusations, the exact mean, CenteredClip, outer steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swarm.apps.display import SwarmView
from swarm.apps.events import Ready, RoundDone
from swarm.rounds.outer import OuterOptimizer, centered_clip, exact_mean, state_digest
from swarm.rounds.parts import (
    Accusation,
    CommitRecord,
    Part,
    PartLayout,
    accusation_holds,
    check_part,
    make_parts,
    new_round_key,
    part_signed_by,
)  # fmt: skip
from zk.circuit import SMALL_PARAMS
from zk.commit import commit_update
from zk.quantize import dequantize_update, quantize_update

PARAMS = SMALL_PARAMS  # 128 values per chunk, depth 8
PART_CHUNKS = 4


def committed(numel: int = 1500, seed: int = 0):
    t = torch.randn(numel, generator=torch.Generator().manual_seed(seed)) * 0.01
    commitment = commit_update(quantize_update(t, PARAMS.block), PARAMS)
    key, public = new_round_key()
    record = CommitRecord(peer_id="QmPeer", round=3, stage=1, root=commitment.root, norm_sq=commitment.norm_sq,
                          numel=numel, num_chunks=commitment.num_chunks, part_key=public, anchor_round=2,
                          anchor_digest=bytes(32))  # fmt: skip
    parts = make_parts(commitment, "QmPeer", 3, 1, key, PART_CHUNKS)
    return commitment, record, parts, key


def test_every_part_of_a_committed_update_passes_its_check_and_they_cover_it_exactly():
    commitment, record, parts, _ = committed()
    layout = PartLayout(PARAMS, record.numel, PART_CHUNKS)
    assert len(parts) == layout.num_parts == 3  # 12 chunks in parts of 4 (the last chunk is partly padding)
    for part in parts:
        assert part_signed_by(record, part)
        assert check_part(record, Part.from_bytes(part.to_bytes()), PARAMS, PART_CHUNKS) is None
    values = np.frombuffer(b"".join(p.values for p in parts), dtype=np.int8)
    assert np.array_equal(values, commitment.update.values.numpy())


@pytest.mark.parametrize("tamper, reason", [
    (lambda p: {"values": p.values[1:2] + p.values[:1] + p.values[2:]}, "hash to the committed root"),  # same norm
    (lambda p: {"scales": (np.frombuffer(p.scales, "<u4") * 2).astype("<u4").tobytes()}, "norms"),
    (lambda p: {"values": p.values[:-1]}, "wrong number"),
    (lambda p: {"path": p.path[:-1]}, "path has the wrong length"),
    (lambda p: {"path": [(p.path[0][0], p.path[0][1]), *p.path[1:]][::-1]}, "committed"),
    (lambda p: {"index": 0}, "committed"),  # right data, claimed for another place
])  # fmt: skip
def test_a_part_that_differs_from_the_committed_data_fails_its_check(tamper, reason):
    _, record, parts, key = committed()
    bad = parts[1].model_copy(update=tamper(parts[1])).signed(key)
    why = check_part(record, bad, PARAMS, PART_CHUNKS)
    assert why is not None and reason in why


def test_a_signed_bad_part_is_an_accusation_anyone_can_check_and_a_good_part_is_not():
    _, record, parts, key = committed()
    bad = parts[0].model_copy(update={"values": bytes(len(parts[0].values))}).signed(key)
    acc = Accusation(accuser="QmB", accused="QmPeer", round=3, stage=1, chunk=0, reason="x", record=record.to_wire(),
                     part=bad.to_bytes())  # fmt: skip
    acc = Accusation.from_bytes(acc.to_bytes())
    assert accusation_holds(acc, record, PARAMS, PART_CHUNKS)
    framed = acc.model_copy(update={"part": parts[0].to_bytes()})  # the accused's honest part: no case
    assert not accusation_holds(framed, record, PARAMS, PART_CHUNKS)
    forged = acc.model_copy(update={"part": bad.model_copy(update={"signature": b"x" * 64}).to_bytes()})
    assert not accusation_holds(forged, record, PARAMS, PART_CHUNKS)  # not signed by the accused's round key
    other = record.model_copy(update={"root": record.root + 1})
    assert not accusation_holds(acc, other, PARAMS, PART_CHUNKS)  # not the record this checker holds


def test_a_record_survives_its_wire_form_and_rejects_garbage():
    _, record, _, _ = committed()
    assert CommitRecord.from_wire(record.to_wire()) == record
    with pytest.raises(ValueError, match="commit record"):
        CommitRecord.from_wire({**record.to_wire(), "root": b"short"})


def test_the_exact_mean_is_the_same_bits_in_any_order_and_is_the_dequantized_mean():
    qs = [quantize_update(torch.randn(1000) * 0.01 * (i + 1)) for i in range(4)]
    a, b = exact_mean(qs), exact_mean(qs[::-1])
    assert torch.equal(a, b)
    reference = torch.stack([dequantize_update(q).double() for q in qs]).mean(0).float()
    torch.testing.assert_close(a, reference, rtol=0, atol=1e-7)


def test_centered_clip_keeps_one_outlier_of_four_from_pulling_the_result():
    honest = [torch.randn(500, generator=torch.Generator().manual_seed(i)) * 0.01 + 0.05 for i in range(3)]
    attacker = -9 * honest[0]
    qs = [quantize_update(t) for t in [*honest, attacker]]
    target = torch.stack(honest).mean(0)
    clipped = centered_clip(qs)
    assert float((clipped - target).norm()) < 0.3 * float((exact_mean(qs) - target).norm())


def test_nesterov_outer_step_follows_diloco_and_its_momentum_enters_the_digest():
    opt = OuterOptimizer("nesterov", lr=0.5, momentum=0.9)
    anchor, delta = torch.zeros(3), torch.tensor([1.0, -2.0, 0.5])
    digest0 = state_digest(anchor, 0, opt)
    a1 = opt.step(anchor, delta)
    torch.testing.assert_close(a1, 0.5 * (delta + 0.9 * delta))  # g = -Δ, m = g, step = g + 0.9 m
    assert state_digest(anchor, 0, opt) != digest0  # same anchor, other momentum: not the same state
    a2 = opt.step(a1, delta)
    m = 0.9 * delta + delta
    torch.testing.assert_close(a2, a1 + 0.5 * (delta + 0.9 * m))
    assert torch.equal(OuterOptimizer("sgd").step(anchor, delta), delta)


def test_the_demo_view_says_who_checked_and_who_was_dropped_why():
    view = SwarmView(n_stages=1)
    view.apply(Ready(peer="s0", role="stage", peer_id="QmCheater"))
    for name in ("s1", "s2"):
        view.apply(RoundDone(peer=name, round=4, stage=0, group_size=2, bytes_sent=1, bytes_received=1, seconds=1,
                             update_norm=1, verified=True, parts_checked=3, accusations=1,
                             dropped={"QmCheater": "caught: chunks do not hash to the root"}))  # fmt: skip
    (line,) = view.verification_lines()
    assert "checked by s1, s2" in line and "s0 dropped: caught" in line and "accusations sent: 2" in line


def test_an_accusation_goes_on_gossipsub_as_evidence_and_comes_back_checkable():
    from swarm.network.gossip.messages import GossipMessage, MessageKind

    _, record, parts, key = committed()
    bad = parts[0].model_copy(update={"values": bytes(len(parts[0].values))}).signed(key)
    acc = Accusation(accuser="QmB", accused="QmPeer", round=3, stage=1, chunk=0, reason="x", record=record.to_wire(),
                     part=bad.to_bytes())  # fmt: skip
    msg = GossipMessage.from_msgpack(GossipMessage.for_evidence("exp", 3, 1, acc.to_bytes()).to_msgpack())
    assert msg.kind is MessageKind.EVIDENCE and (msg.round, msg.stage) == (3, 1)
    assert accusation_holds(Accusation.from_bytes(msg.body), record, PARAMS, PART_CHUNKS)


def test_the_settler_proves_the_commitment_the_group_averaged_and_nothing_else():
    from types import SimpleNamespace

    from swarm.rounds.verified import commitment_of

    commitment, *_ = committed()
    report = SimpleNamespace(round=3, delta=torch.zeros(1500), commitment=commitment,
                             result=SimpleNamespace(verified=True))  # fmt: skip
    assert commitment_of(report, PARAMS) is commitment  # the same object: never quantized again
    with pytest.raises(ValueError, match="same CircuitParams"):
        commitment_of(report, PARAMS.model_copy(update={"depth": 9}))
    zero = commit_update(quantize_update(torch.zeros(1500), PARAMS.block), PARAMS)
    with pytest.raises(ValueError, match="update is zero"):
        commitment_of(SimpleNamespace(round=3, commitment=zero), PARAMS)
    late = SimpleNamespace(round=3, delta=torch.zeros(1500), commitment=None, result=SimpleNamespace(verified=True))
    with pytest.raises(ValueError, match="committed nothing in time"):
        commitment_of(late, PARAMS)
    unchecked = SimpleNamespace(round=3, delta=torch.ones(1500) * 0.01, commitment=None,
                                result=SimpleNamespace(verified=False))  # fmt: skip
    assert commitment_of(unchecked, PARAMS).num_chunks == commitment.num_chunks  # --no-verify: committed here
