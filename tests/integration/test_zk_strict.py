"""Strict mode of the background prover (zk/background.py): every chunk of each round's commitment proven, at a
lower priority than the contribution's and the audits' proofs, the previous round's leftovers dropped. Real
groth16py proofs of the small circuit."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from zk.background import BackgroundProver, StrictReport
from zk.chunk_prover import ChunkProver
from zk.circuit import SMALL_PARAMS as PARAMS
from zk.commit import Commitment, commit_update
from zk.prover import ProofError, ZkWorker
from zk.quantize import quantize_update

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PEER, OTHER = "0x" + "c1" * 20, "0x" + "d2" * 20
DEADLINE_S = 300.0


def update(seed: int) -> Commitment:
    torch.manual_seed(seed)
    return commit_update(quantize_update(torch.randn(700) * 0.02, PARAMS.block), PARAMS)  # 6 chunks of 128


class Log:
    """What happened, in order: strict reports and finished plain jobs."""

    def __init__(self) -> None:
        self.items: list[tuple[str, object]] = []
        self.changed = threading.Condition()

    def add(self, kind: str, what: object) -> None:
        with self.changed:
            self.items.append((kind, what))
            self.changed.notify_all()

    def wait_for(self, predicate) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self.items), timeout=DEADLINE_S), self.items

    def reports(self) -> dict[int, StrictReport]:
        return {r.round: r for kind, r in self.items if kind == "strict"}


def test_strict_mode_proves_every_chunk_after_the_urgent_ones_and_drops_a_stale_round():
    c5, c6, c7 = update(5), update(6), update(7)
    assert c5.num_chunks == 6
    log = Log()
    claim = {"experiment": 2, "stage": 0, "norm_bound": max(c.norm_sq for c in (c5, c6, c7))}
    with BackgroundProver(PARAMS, backend="groth16py", workers=1, strict=True,
                          on_strict=lambda r: log.add("strict", r)) as bg:
        c0 = bg.submit(c5, round=5, peer=PEER, chunks=[2], **claim)
        assert c0.result(timeout=DEADLINE_S)[0].chunk == 2
        log.wait_for(lambda items: any(k == "strict" for k, _ in items))
        first = log.reports()[5]
        assert (first.chunks, first.proven, first.complete) == (6, 6, True)
        audit = bg.submit(c5, round=5, peer=PEER, chunks=[4, 0], **claim)
        assert audit.done(), "a chunk the strict pass proved is answered at once"
        answered = audit.result()

        # round 6 starts a pass; an older round's audit (another peer: nothing to answer it from) goes first;
        # round 7 comes before round 6's pass can be done, which drops the rest of it
        assert bg.submit(c6, round=6, peer=PEER, chunks=[0], **claim).result(timeout=DEADLINE_S)[0].chunk == 0
        older = bg.submit(c5, round=5, peer=OTHER, chunks=[1], **claim)
        older.add_done_callback(lambda f: log.add("older audit done", None))
        last = bg.submit(c7, round=7, peer=PEER, chunks=[3], **claim)
        assert last.result(timeout=DEADLINE_S)[0].chunk == 3
        log.wait_for(lambda items: sum(k == "strict" for k, _ in items) == 3)
        assert bg.pending == 0
    reports = log.reports()
    assert not reports[6].complete and 1 <= reports[6].proven < 6, reports[6]
    assert reports[7].complete and reports[7].proven == 6
    kinds = [k for k, _ in log.items]
    assert kinds.index("older audit done") < len(kinds) - 1 - kinds[::-1].index("strict"), kinds
    with ZkWorker() as w:
        prover = ChunkProver(w, PARAMS, backend="groth16py", setup=False)
        assert [p.chunk for p in answered] == [4, 0]
        assert all(prover.verify(p, claim["norm_bound"]) for p in [*answered, older.result()[0]])


def test_without_strict_mode_only_the_asked_chunks_are_proven():
    c = update(8)
    reports: list[StrictReport] = []
    with BackgroundProver(PARAMS, backend="groth16py", workers=1, on_strict=reports.append) as bg:
        proofs = bg.submit(c, experiment=2, round=1, stage=0, peer=PEER, chunks=[1], norm_bound=c.norm_sq)
        assert [p.chunk for p in proofs.result(timeout=DEADLINE_S)] == [1]
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and bg.pending == 0:  # nothing is queued behind it
            time.sleep(0.1)
        assert bg.pending == 0 and reports == []


def test_the_earliest_deadline_is_proven_first_and_a_passed_one_not_at_all():
    """An audit answer due soon is not kept behind a later-due contribution proof queued before it; a job whose
    window has closed fails at once instead of costing a proof."""
    c = update(9)
    claim = {"experiment": 2, "round": 3, "stage": 0, "peer": PEER, "norm_bound": c.norm_sq}
    finished: list[str] = []
    now = time.time()
    with BackgroundProver(PARAMS, backend="groth16py", workers=1) as bg:
        busy = bg.submit(c, chunks=[0, 1], deadline=now + 100, **claim)  # keeps the one worker busy
        late = bg.submit(c, chunks=[2], deadline=now + 1000, **claim)
        early = bg.submit(c, chunks=[3], deadline=now + 500, **claim)
        passed = bg.submit(c, chunks=[4], deadline=now - 1, **claim)
        for name, f in (("late", late), ("early", early)):
            f.add_done_callback(lambda _, name=name: finished.append(name))
        assert [p.chunk for p in late.result(timeout=DEADLINE_S)] == [2]
        assert early.done() and busy.done()
        with pytest.raises(ProofError, match="deadline"):
            passed.result(timeout=DEADLINE_S)
    assert finished == ["early", "late"]
