"""Workloads: one model declared once, cut into stages, same parameters for the same seed, real data."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.models import WorkloadError, balanced_cut, data, get_workload, run_stages


@pytest.fixture(scope="module")
def small_lm():
    return get_workload("tinylm", n_layer=2, n_embd=32, n_head=2, block_size=16)


def _flat(modules) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for m in modules for p in m.parameters()])


def test_unknown_workload_names_the_choices():
    with pytest.raises(WorkloadError, match="digits, tinylm"):
        get_workload("mnist")


def test_unknown_option_is_rejected_with_the_known_ones():
    with pytest.raises(WorkloadError, match="hidden"):
        get_workload("digits", width=3)


@pytest.mark.parametrize("name", ["digits", "tinylm"])
def test_same_seed_gives_same_stage_parameters(name):
    w = get_workload(name)
    assert torch.equal(_flat(w.build_stages(2, seed=7)), _flat(w.build_stages(2, seed=7)))
    assert not torch.equal(_flat(w.build_stages(2, seed=7)), _flat(w.build_stages(2, seed=8)))


def test_building_stages_leaves_global_rng_alone():
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    get_workload("digits").build_stages(2, seed=1)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("n_stages", [1, 2, 3, 4])
def test_stages_compose_to_the_full_model(n_stages):
    w = get_workload("digits")
    stages = w.build_stages(n_stages, seed=0)
    full = w.build_full(seed=0)
    assert len(stages) == n_stages
    assert all(len(list(s.parameters())) > 0 for s in stages)
    x, _ = next(w.batches(16, seed=0))
    assert torch.allclose(run_stages(stages, x), full(x))
    assert torch.equal(_flat(stages), _flat([full]))


def test_tinylm_stages_compose_to_the_full_model(small_lm):
    stages = small_lm.build_stages(3, seed=0)
    x, _ = next(small_lm.batches(4, seed=0))
    assert torch.allclose(run_stages(stages, x), small_lm.build_full(0)(x), atol=1e-6)


def test_too_many_stages_is_a_clear_error():
    w = get_workload("digits")  # 4 blocks
    with pytest.raises(WorkloadError, match="1..4 stages"):
        w.build_stages(5)
    with pytest.raises(WorkloadError, match="stage 2 does not exist"):
        w.build_stage(2, 2)


def test_build_stage_is_the_same_as_that_stage_of_build_stages():
    w = get_workload("digits")
    assert torch.equal(_flat([w.build_stage(3, 1, seed=4)]), _flat([w.build_stages(3, seed=4)[1]]))


@settings(max_examples=60, deadline=None)
@given(costs=st.lists(st.integers(1, 100), min_size=1, max_size=7), data_=st.data())
def test_balanced_cut_is_contiguous_and_optimal(costs, data_):
    k = data_.draw(st.integers(1, len(costs)))
    bounds = balanced_cut(costs, k)
    assert len(bounds) == k and bounds[0][0] == 0 and bounds[-1][1] == len(costs)
    assert all(lo < hi for lo, hi in bounds) and all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    worst = max(sum(costs[lo:hi]) for lo, hi in bounds)
    brute = min(
        max(sum(costs[lo:hi]) for lo, hi in itertools.pairwise((0, *cuts, len(costs))))
        for cuts in itertools.combinations(range(1, len(costs)), k - 1)
    )
    assert worst == brute


def test_batches_are_reproducible_and_depend_on_seed():
    w = get_workload("digits")
    a = [x for x, _ in itertools.islice(w.batches(32, seed=1), 3)]
    b = [x for x, _ in itertools.islice(w.batches(32, seed=1), 3)]
    c = [x for x, _ in itertools.islice(w.batches(32, seed=2), 3)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


def test_digits_train_and_test_are_disjoint_real_data():
    xtr, ytr = data.digits_arrays("train")
    xte, _ = data.digits_arrays("test")
    assert len(xtr) + len(xte) == 1797 and set(ytr.tolist()) == set(range(10))
    train_rows = {tuple(r) for r in xtr.tolist()}
    assert sum(tuple(r) in train_rows for r in xte.tolist()) < len(xte) // 10  # a few duplicate images exist


def test_tinylm_targets_are_the_next_bytes_of_stdlib_source(small_lm):
    x, y = next(small_lm.batches(4, seed=0))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    text = bytes(data.stdlib_bytes("train")[:5000].tolist())
    assert b"def " in text or b"import" in text


def test_bad_batch_requests_are_clear_errors():
    w = get_workload("digits")
    with pytest.raises(data.DataError, match="positive integer"):
        next(w.batches(0, seed=0))
    with pytest.raises(data.DataError, match="unknown split"):
        next(w.batches(8, seed=0, split="validation"))
    with pytest.raises(data.DataError, match="larger than the data set"):
        next(w.batches(10_000, seed=0))


def test_a_few_steps_through_the_stages_lower_the_digits_loss():
    w = get_workload("digits")
    stages = w.build_stages(2, seed=0)
    before = w.evaluate(stages)
    opt = torch.optim.Adam([p for s in stages for p in s.parameters()], lr=3e-3)
    for x, y in itertools.islice(w.batches(64, seed=0), 60):
        opt.zero_grad()
        w.loss(run_stages(stages, x), y).backward()
        opt.step()
    assert w.evaluate(stages) < 0.5 * before
    assert w.accuracy(lambda x: run_stages(stages, x)) > 0.8


@pytest.mark.parametrize("name", ["digits", "tinylm"])
def test_the_test_set_does_not_depend_on_the_batch_size(name):
    w = get_workload(name)
    small = torch.cat([x.flatten() for x, _ in w.eval_batches(16)])
    large = torch.cat([x.flatten() for x, _ in w.eval_batches(100)])
    assert torch.equal(small, large)
