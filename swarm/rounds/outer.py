"""The group's averaged update from verified quantized parts, and the outer step that applies it to the anchor.

Everything here is deterministic: the mean is an exact integer sum (codes x fixed-point scales, int64), so every
peer that holds the same verified updates gets the same bits whatever order it summed them in; CenteredClip runs
in float64 over the updates sorted by peer id. The outer optimizers are plain torch ops on the same inputs.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import torch

from protocol.fixed_point import SCALE_FRAC_BITS
from zk.quantize import QuantizedUpdate, dequantize_update

Aggregation = Literal["mean", "centered_clip"]
OuterName = Literal["sgd", "nesterov"]
CLIP_ITERATIONS = 5


def fixed_point_values(q: QuantizedUpdate) -> torch.Tensor:
    """code x scale per value, exact (int64; |code| <= 127 and scale < 2**32, so far from overflow)."""
    scales = q.scales.to(torch.int64).repeat_interleave(q.block_size)[: q.numel]
    return q.values.to(torch.int64) * scales


def exact_mean(updates: list[QuantizedUpdate]) -> torch.Tensor:
    """The mean of the dequantized updates, from an exact integer sum: the same bits on every peer."""
    if not updates:
        raise ValueError("no updates to average")
    total = torch.zeros(updates[0].numel, dtype=torch.int64)
    for q in updates:
        if q.numel != total.numel():
            raise ValueError(f"updates of different sizes: {q.numel} and {total.numel()}")
        total += fixed_point_values(q)
    return (total.to(torch.float64) / (len(updates) * float(1 << SCALE_FRAC_BITS))).to(torch.float32)


def centered_clip(updates: list[QuantizedUpdate], tau: float | None = None,
                  iterations: int = CLIP_ITERATIONS) -> torch.Tensor:
    """CenteredClip (Karimireddy et al. 2021, used by BTARD): v += mean_i clip(x_i - v, tau), from the median.

    `tau` defaults to the median distance of the updates from their coordinate-wise median, so that at most half
    of the group can pull the result by more than that radius. `updates` must be in an order all peers share.
    """
    if not updates:
        raise ValueError("no updates to aggregate")
    xs = torch.stack([dequantize_update(q).reshape(-1).to(torch.float64) for q in updates])  # (n, numel)
    v = xs.median(dim=0).values if len(updates) > 2 else xs.mean(dim=0)
    if tau is None:
        tau = float((xs - v).norm(dim=1).median())
    for _ in range(iterations):
        diff = xs - v
        dist = diff.norm(dim=1, keepdim=True)
        weight = torch.clamp(tau / torch.clamp(dist, min=1e-30), max=1.0)
        v = v + (diff * weight).mean(dim=0)
    return v.to(torch.float32)


def aggregate(updates: list[QuantizedUpdate], how: Aggregation = "mean") -> torch.Tensor:
    if how == "mean":
        return exact_mean(updates)
    if how == "centered_clip":
        return centered_clip(updates)
    raise ValueError(f"unknown aggregation {how!r}: use 'mean' or 'centered_clip'")


class OuterOptimizer:
    """Applies the group's averaged update Δ to the anchor: SGD (anchor += lr Δ) or DiLoCo's Nesterov momentum.

    DiLoCo (arXiv 2311.08105) treats -Δ as an outer gradient g: m = mu m + g; anchor -= lr (g + mu m).
    Its state (the momentum) is part of what every peer of a group must share, so it is in `digest`.

    A round in which the group did not train (Δ exactly 0: no batch reached the stage, e.g. while another stage
    has no peer or before a trainer arrives) is no outer step: the anchor and the momentum stay as they are. In
    DiLoCo every worker always trains; a swarm idles, and coasting on the momentum through idle rounds moves the
    anchor by up to lr mu / (1 - mu) = 6.3 x m with nothing learnt (measured: digits' test loss 0.22 -> 0.90 after
    4 idle rounds of one stage, 6.95 after 8 and 4).
    """

    def __init__(self, name: OuterName = "sgd", lr: float | None = None, momentum: float = 0.9) -> None:
        if name not in ("sgd", "nesterov"):
            raise ValueError(f"unknown outer optimizer {name!r}: use 'sgd' or 'nesterov'")
        self.name = name
        self.lr = lr if lr is not None else (1.0 if name == "sgd" else 0.7)
        self.momentum_factor = momentum
        self.momentum: torch.Tensor | None = None

    def step(self, anchor: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The next anchor (a new tensor); `anchor` and `delta` are flat float32."""
        if self.name == "sgd":
            return anchor + self.lr * delta if self.lr != 1.0 else anchor + delta
        if not torch.any(delta):  # an idle round: nothing to follow (the same decision on every peer: same Δ)
            return anchor.clone()
        g = -delta
        if self.momentum is None:
            self.momentum = torch.zeros_like(anchor)
        self.momentum = self.momentum_factor * self.momentum + g
        return anchor - self.lr * (g + self.momentum_factor * self.momentum)

    def state(self) -> torch.Tensor:
        return self.momentum if self.momentum is not None else torch.zeros(0)

    def load_state(self, momentum: torch.Tensor) -> None:
        self.momentum = momentum.clone() if momentum.numel() else None


def state_digest(anchor: torch.Tensor, anchor_round: int, outer: OuterOptimizer) -> bytes:
    """What peers compare to know they share a starting point: the anchor's bits, its round, the momentum."""
    h = hashlib.sha256(b"swarm-anchor-v1")
    h.update(int(anchor_round).to_bytes(8, "big", signed=True))
    h.update(anchor.contiguous().numpy().tobytes())
    h.update(outer.state().contiguous().numpy().tobytes())
    return h.digest()
