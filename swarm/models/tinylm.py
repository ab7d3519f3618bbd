"""A small byte-level transformer language model (nanoGPT-style) over the Python standard library's source.

Blocks: embedding (tokens + positions), `n_layer` transformer blocks, head (final norm + vocabulary projection).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from swarm.models import data
from swarm.models.workload import Batch, Workload, token_error

VOCAB = 256  # bytes


@dataclass
class TinyLMConfig:
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    eval_windows: int = 256  # the fixed test set: this many windows of the test split


class Embedding(nn.Module):
    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, cfg.n_embd)
        self.pos = nn.Embedding(cfg.block_size, cfg.n_embd)

    def input_error(self, idx: torch.Tensor) -> str | None:
        return token_error(idx, VOCAB, self.pos.num_embeddings)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        return self.tok(idx) + self.pos(positions)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(), nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Head(nn.Module):
    def __init__(self, cfg: TinyLMConfig) -> None:
        super().__init__()
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, VOCAB, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.ln_f(x))


class TinyLM(Workload):
    """Next-byte prediction on stdlib source; the loss is in nats per byte."""

    name = "tinylm"

    def __init__(self, config: TinyLMConfig | None = None) -> None:
        self.config = config or TinyLMConfig()

    def make_blocks(self) -> list[nn.Module]:
        cfg = self.config
        return [Embedding(cfg), *(Block(cfg) for _ in range(cfg.n_layer)), Head(cfg)]

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    def batches(self, batch_size: int, seed: int, *, split: str = "train") -> Iterator[Batch]:
        return data.byte_windows(data.stdlib_bytes(split), batch_size, self.config.block_size, seed)

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        data.check_batch_size(batch_size)
        x, y = next(self.batches(self.config.eval_windows, seed=12345, split="test"))
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
