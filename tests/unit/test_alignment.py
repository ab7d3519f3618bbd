"""The alignment rule (swarm/rounds/alignment.py): exact integer cosines, the same decision as a float reference on
clear cases, zero updates harmless, no overflow at the largest scales, and the noise attack fails it."""

from __future__ import annotations

import math

import pytest
import torch

from protocol.fixed_point import QMAX, SCALE_FRAC_BITS, SCALE_MAX
from swarm.rounds.alignment import MIN_GROUP, Alignment, alignments, gram, misaligned
from swarm.rounds.verified import attacked_update
from zk.quantize import QuantizedUpdate, dequantize_update, quantize_update

D = 20_000


def vectors(n_aligned: int, n_noise: int, seed: int = 0, common: float = 1.0) -> list[torch.Tensor]:
    """n_aligned vectors sharing a direction (plus their own noise), then n_noise independent random ones."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(D, generator=g)
    return [common * base + torch.randn(D, generator=g) for _ in range(n_aligned)] + \
        [torch.randn(D, generator=g) * 1.4 for _ in range(n_noise)]


def float_cos(xs: list[torch.Tensor], i: int) -> float:
    x = xs[i].double()
    rest = sum(v.double() for j, v in enumerate(xs) if j != i)
    return float(x @ rest / (x.norm() * rest.norm()))


def test_gram_is_the_exact_integer_dot_product_of_codes_times_scales():
    ups = [quantize_update(v) for v in vectors(2, 1)]
    g = gram(ups)
    for i, a in enumerate(ups):
        for j, b in enumerate(ups):
            fa = [int(c) * int(a.scales[k // a.block_size]) for k, c in enumerate(a.values.tolist())]
            fb = [int(c) * int(b.scales[k // b.block_size]) for k, c in enumerate(b.values.tolist())]
            assert g[i][j] == sum(x * y for x, y in zip(fa, fb))
    assert g[0][0] == ups[0].norm_sq()


def test_aligned_peers_pass_and_random_ones_fail_as_a_float_reference_says():
    xs = vectors(3, 2)
    ups = [quantize_update(v) for v in xs]
    peers = ["a", "b", "c", "r1", "r2"]
    dropped, found = misaligned(peers, ups, 4.0)
    assert set(dropped) == {"r1", "r2"}
    assert "not aligned with the group's" in dropped["r1"]
    deq = [dequantize_update(u) for u in ups]
    for i, p in enumerate(peers):
        assert found[p].cos == pytest.approx(float_cos(deq, i), abs=1e-9)
        threshold = 4.0 / math.sqrt(D)
        assert (float_cos(deq, i) >= threshold) == (p not in dropped)
    assert all(found[p].sigmas > 40 for p in "abc") and all(abs(found[p].sigmas) < 4 for p in ("r1", "r2"))


def test_the_exact_test_agrees_with_the_float_one_across_thresholds():
    for seed in range(5):
        xs = vectors(3, 1, seed=seed, common=0.05)  # weak shared direction: cosines near the thresholds
        ups = [quantize_update(v) for v in xs]
        deq = [dequantize_update(u) for u in ups]
        for i, a in enumerate(alignments(ups)):
            cos = float_cos(deq, i)
            for k in (0.0, 1.0, 2.5, 4.0, 6.0):
                if abs(cos - k / math.sqrt(D)) > 1e-9:  # clear cases only
                    assert a.passes(k) == (cos >= k / math.sqrt(D)), (seed, i, k, cos)


def test_zero_updates_are_never_dropped_and_a_zero_rest_judges_nobody():
    xs = vectors(3, 0)
    ups = [quantize_update(v) for v in xs] + [quantize_update(torch.zeros(D))]
    dropped, found = misaligned(["a", "b", "c", "idle"], ups, 4.0)
    assert dropped == {} and found["idle"].norm_sq == 0 and found["idle"].passes(1e9)
    idle = [quantize_update(torch.zeros(D)) for _ in range(3)]
    assert misaligned(["x", "y", "z"], idle, 4.0)[0] == {}  # an idle stage: nobody trained, nobody is judged
    # one trained peer among idle ones: its others sum to 0, nothing to compare with
    one = [quantize_update(xs[0]), *idle[:2]]
    assert misaligned(["x", "y", "z"], one, 4.0)[0] == {}


def test_groups_below_three_and_a_rule_turned_off_drop_nobody():
    ups = [quantize_update(v) for v in vectors(1, 2)]
    assert misaligned(["a", "r"], ups[:2], 4.0) == ({}, {})
    assert MIN_GROUP == 3
    assert misaligned(["a", "r1", "r2"], ups, None) == ({}, {})
    assert misaligned(["a", "r1", "r2"], ups, 0) == ({}, {})
    with pytest.raises(ValueError, match="2 peers but 3 updates"):
        misaligned(["a", "b"], ups, 4.0)


def test_largest_scales_do_not_overflow():
    """Scales at SCALE_MAX and codes at +-127: products far beyond int64, summed exactly."""
    n = 4 * 256
    big = QuantizedUpdate(torch.full((n,), QMAX, dtype=torch.int8), torch.full((4,), SCALE_MAX, dtype=torch.int64),
                          n, (n,), 256)
    neg = QuantizedUpdate(torch.full((n,), -QMAX, dtype=torch.int8), torch.full((4,), SCALE_MAX, dtype=torch.int64),
                          n, (n,), 256)
    g = gram([big, big, neg])
    assert g[0][0] == n * QMAX**2 * SCALE_MAX**2 > 2**63
    assert g[0][2] == -g[0][0]
    found = alignments([big, big, neg])
    assert found[0].dot == 0 and found[2].dot == -2 * g[0][0]  # big + neg cancel; neg is opposite to 2 big
    assert not found[2].passes(0.0) and found[0].passes(0.0)
    # mixed: one small-scale update among large ones (the int64 path for some pairs, Python ints for others)
    small = quantize_update(torch.ones(n) * 1e-3)
    assert gram([big, small])[0][1] == sum(QMAX * SCALE_MAX * int(c) * int(small.scales[k // 256])
                                          for k, c in enumerate(small.values.tolist()))
    assert gram([big, small])[0][1] > 0 and small.scales.max() * QMAX < 2 ** (SCALE_FRAC_BITS - 8)


def test_sizes_must_match():
    with pytest.raises(ValueError, match="different sizes"):
        gram([quantize_update(torch.ones(300)), quantize_update(torch.ones(400))])
    assert gram([]) == [] and Alignment(0, 0, 5, 10).cos == 0.0


def test_the_noise_attack_has_the_honest_norm_and_fails_the_rule():
    xs = vectors(4, 0)
    noisy = attacked_update(xs[3], "noise", None)
    assert noisy.norm() == pytest.approx(float(xs[3].norm()), rel=1e-5)
    assert not torch.equal(noisy, attacked_update(xs[3], "noise", None))  # fresh every round: no replay
    assert torch.equal(attacked_update(torch.zeros(5), "noise", None), torch.zeros(5))  # idle stays idle
    ups = [quantize_update(v) for v in [*xs[:3], noisy]]
    dropped, _ = misaligned(["a", "b", "c", "noise"], ups, 4.0)
    assert set(dropped) == {"noise"}
