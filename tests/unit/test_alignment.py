"""The alignment rule (swarm/rounds/alignment.py): exact integer cosines, the same decisions as a float reference on
clear cases, zero updates harmless, a majority of pairs (one large or two colluding cheaters do not turn it), no
overflow at the largest scales, and the noise attack fails it."""

from __future__ import annotations

import math
import os

import pytest
import torch

from protocol.fixed_point import QMAX, SCALE_FRAC_BITS, SCALE_MAX
from swarm.rounds.alignment import DEFAULT_MIN_ALIGNMENT, MIN_GROUP, aligned, cosine, gram, misaligned
from swarm.rounds.attacks import ATTACKS
from swarm.rounds.verified import attacked_update
from zk.quantize import QuantizedUpdate, dequantize_update, quantize_update

D = 20_000


def vectors(n_aligned: int, n_noise: int, seed: int = 0, common: float = 1.0) -> list[torch.Tensor]:
    """n_aligned vectors sharing a direction (plus their own noise), then n_noise independent random ones."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(D, generator=g)
    return [common * base + torch.randn(D, generator=g) for _ in range(n_aligned)] + \
        [torch.randn(D, generator=g) * 1.4 for _ in range(n_noise)]


def float_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()))


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
    ups = [quantize_update(v) for v in vectors(3, 2)]
    peers = ["a", "b", "c", "r1", "r2"]
    dropped, sigmas = misaligned(peers, ups, 4.0)
    assert set(dropped) == {"r1", "r2"}
    assert dropped["r1"].startswith("update not aligned with the group's: cos with the others' ")
    assert dropped["r1"].endswith("with 0 of 4")
    deq = [dequantize_update(u) for u in ups]
    g = gram(ups)
    for i in range(5):
        others = [j for j in range(5) if j != i]
        expect = [float_cos(deq[i], deq[j]) * math.sqrt(D) for j in others]
        assert sigmas[peers[i]] == pytest.approx(expect, abs=1e-6)
        for j in others:
            assert aligned(g, i, j, D, 4.0) == (float_cos(deq[i], deq[j]) >= 4.0 / math.sqrt(D))
    assert all(min(sigmas[p][:2]) > 40 for p in "abc") and all(abs(s) < 4 for s in sigmas["r1"])


def test_the_exact_test_agrees_with_the_float_one_across_thresholds():
    for seed in range(5):
        xs = vectors(3, 1, seed=seed, common=0.05)  # weak shared direction: cosines near the thresholds
        ups = [quantize_update(v) for v in xs]
        deq = [dequantize_update(u) for u in ups]
        g = gram(ups)
        for i in range(4):
            for j in range(4):
                cos = float_cos(deq[i], deq[j])
                assert cosine(g, i, j) == pytest.approx(cos, abs=1e-7)  # the reference: float32 values
                for k in (0.0, 1.0, 2.5, 4.0, 6.0):
                    if abs(cos - k / math.sqrt(D)) > 1e-6:  # clear cases only
                        assert aligned(g, i, j, D, k) == (cos >= k / math.sqrt(D)), (seed, i, j, k, cos)


def test_zero_updates_are_never_dropped_nor_counted():
    xs = vectors(3, 1)
    zero = quantize_update(torch.zeros(D))
    dropped, sigmas = misaligned(["a", "b", "c", "r", "idle"], [*(quantize_update(v) for v in xs), zero], 4.0)
    assert set(dropped) == {"r"} and "idle" not in sigmas and dropped["r"].endswith("with 0 of 3")
    assert misaligned(["x", "y", "z"], [zero] * 3, 4.0) == ({}, {})  # an idle stage: nobody is judged
    # two trained peers and idle ones: fewer than 3 to judge, nothing to compare
    assert misaligned(["a", "r", "y", "z"], [quantize_update(xs[0]), quantize_update(xs[3]), zero, zero], 4.0) == \
        ({}, {})


def test_small_groups_no_majority_or_a_rule_turned_off_drop_nobody():
    ups = [quantize_update(v) for v in vectors(1, 2)]
    assert misaligned(["a", "r"], ups[:2], 4.0) == ({}, {})
    assert MIN_GROUP == 3
    assert misaligned(["a", "r1", "r2"], ups, None) == ({}, {})
    assert misaligned(["a", "r1", "r2"], ups, 0) == ({}, {})
    dropped, sigmas = misaligned(["a", "r1", "r2"], ups, 4.0)  # all noise to each other: no majority direction
    assert dropped == {} and len(sigmas) == 3
    with pytest.raises(ValueError, match="2 peers but 3 updates"):
        misaligned(["a", "b"], ups, 4.0)


def test_two_honest_peers_beat_one_rider_and_a_scaled_adversary_is_dropped_without_dragging_them():
    xs = vectors(3, 1)
    honest = [quantize_update(v) for v in xs[:2]]
    assert set(misaligned(["a", "b", "r"], [*honest, quantize_update(xs[3])], 4.0)[0]) == {"r"}
    # -9x an honest update (within the norm rule): against a sum it would turn every honest peer's "others" around
    scaled = quantize_update(-9.0 * xs[2])
    assert set(misaligned(["a", "b", "s"], [*honest, scaled], 4.0)[0]) == {"s"}
    # two colluding riders sending one random vector are aligned with each other, but not with half of the others
    r = quantize_update(xs[3])
    dropped, _ = misaligned(["a", "b", "c", "r1", "r2"], [*honest, quantize_update(xs[2]), r, r], 4.0)
    assert set(dropped) == {"r1", "r2"} and dropped["r1"].endswith("with 1 of 4")
    # half rounded down: of 3 honest peers and a rider, b and c are not aligned with each other (each shares a
    # different half of a's direction), yet each is with a: 1 of 3 is enough, and the rider is still dropped
    g = torch.Generator().manual_seed(5)
    u, v = torch.randn(D, generator=g), torch.randn(D, generator=g)
    a, b, c = u + v, u + 0.5 * torch.randn(D, generator=g), v + 0.5 * torch.randn(D, generator=g)
    ups = [quantize_update(x) for x in (a, b, c, 1.5 * torch.randn(D, generator=g))]
    assert not aligned(gram(ups), 1, 2, D, 4.0)
    assert set(misaligned(["a", "b", "c", "r"], ups, 4.0)[0]) == {"r"}


def test_largest_scales_do_not_overflow():
    """Scales at SCALE_MAX and codes at +-127: products far beyond int64, summed exactly."""
    n = 4 * 256
    big = QuantizedUpdate(torch.full((n,), QMAX, dtype=torch.int8), torch.full((4,), SCALE_MAX, dtype=torch.int64),
                          n, (n,), 256)
    neg = QuantizedUpdate(torch.full((n,), -QMAX, dtype=torch.int8), torch.full((4,), SCALE_MAX, dtype=torch.int64),
                          n, (n,), 256)
    g = gram([big, big, neg])
    assert g[0][0] == n * QMAX**2 * SCALE_MAX**2 > 2**63
    assert g[0][2] == -g[0][0] and g[0][1] == g[0][0]
    assert aligned(g, 0, 1, n, 4.0) and not aligned(g, 0, 2, n, 0.0)
    dropped, _ = misaligned(["a", "b", "n"], [big, big, neg], 4.0)
    assert set(dropped) == {"n"}
    # mixed: one small-scale update among large ones (the int64 path for some pairs, Python ints for others)
    small = quantize_update(torch.ones(n) * 1e-3)
    assert gram([big, small])[0][1] == sum(QMAX * SCALE_MAX * int(c) * int(small.scales[k // 256])
                                          for k, c in enumerate(small.values.tolist()))
    assert gram([big, small])[0][1] > 0 and small.scales.max() * QMAX < 2 ** (SCALE_FRAC_BITS - 8)


def test_sizes_must_match():
    with pytest.raises(ValueError, match="different sizes"):
        gram([quantize_update(torch.ones(300)), quantize_update(torch.ones(400))])
    assert gram([]) == []


def test_the_noise_attack_has_the_honest_norm_and_fails_the_rule():
    xs = vectors(4, 0)
    noisy = attacked_update(xs[3], "noise", None)
    assert noisy.norm() == pytest.approx(float(xs[3].norm()), rel=1e-5)
    assert not torch.equal(noisy, attacked_update(xs[3], "noise", None))  # fresh every round: no replay
    assert torch.equal(attacked_update(torch.zeros(5), "noise", None), torch.zeros(5))  # idle stays idle
    ups = [quantize_update(v) for v in [*xs[:3], noisy]]
    dropped, _ = misaligned(["a", "b", "c", "noise"], ups, 4.0)
    assert set(dropped) == {"noise"}


def test_chunked_sums_equal_the_whole(monkeypatch):
    from swarm.rounds import alignment

    ups = [quantize_update(v[: 5 * 256 + 17]) for v in vectors(2, 1)]  # a partial last block
    whole = gram(ups)
    monkeypatch.setattr(alignment, "CHUNK_BLOCKS", 2)
    assert gram(ups) == whole


def test_the_rule_and_the_noise_attack_reach_the_peer_and_the_demo_from_their_flags(monkeypatch):
    from swarm.apps.demo.run import DemoConfig, build_parser
    from swarm.apps.peer import EXIT_CONFIG, main, parse_config

    for key in [k for k in os.environ if k.startswith("SWARM_") and k != "SWARM_TEST_SESSION"]:
        monkeypatch.delenv(key)
    peer = "/ip4/127.0.0.1/tcp/4001/p2p/QmSoLnSGccFuZQJzRadHn95W2CrSFmZuTdDWP8HXaHca9z"
    assert parse_config(["--join", "--initial-peers", peer]).min_alignment == DEFAULT_MIN_ALIGNMENT == 4.0
    config = parse_config(["--join", "--initial-peers", peer, "--min-alignment", "0", "--byzantine", "--attack",
                           "noise"])  # fmt: skip
    assert (config.min_alignment, config.byzantine, config.attack) == (0.0, True, "noise")
    assert main(["--join", "--initial-peers", peer, "--min-alignment", "-1"]) == EXIT_CONFIG
    demo = DemoConfig(**vars(build_parser().parse_args(["--attack", "noise", "--min-alignment", "0"])))
    assert (demo.attack, demo.min_alignment) == ("noise", 0.0)
    assert DemoConfig(**vars(build_parser().parse_args([]))).min_alignment is None  # the peers' default
    assert set(ATTACKS) >= {"poison", "scale", "random", "stale", "norm", "withhold", "noise", "silent"}
