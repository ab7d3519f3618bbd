"""Real data every machine has: scikit-learn's bundled digits and the Python standard library's own source.

Both are loaded once per process, split into train/test deterministically, and served as endless shuffled batches.
"""

from __future__ import annotations

import functools
import logging
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
TEST_EVERY = 5  # every 5th example (digits) / every 5th source file (stdlib) is held out for testing


class DataError(ValueError):
    """A data set cannot be loaded or a batch request makes no sense."""


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")


def check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")


@functools.cache
def digits_arrays(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8x8 digits as (N, 64) floats in [0, 1] and (N,) int64 labels; every TEST_EVERY-th example is test."""
    check_split(split)
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    is_test = torch.arange(len(y)) % TEST_EVERY == 0
    mask = is_test if split == "test" else ~is_test
    return x[mask].contiguous(), y[mask].contiguous()


def stdlib_source_files() -> list[Path]:
    """The top-level `*.py` files of this Python's standard library, sorted by name (same on every peer)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"))
    if not files:
        raise DataError(f"no Python source files found in the standard library folder {root}")
    return files


@functools.cache
def stdlib_bytes(split: str) -> torch.Tensor:
    """The standard library's source as one uint8 tensor; every TEST_EVERY-th file goes to the test split."""
    check_split(split)
    files = stdlib_source_files()
    chosen = [f for i, f in enumerate(files) if (i % TEST_EVERY == 0) == (split == "test")]
    blob = b"\n".join(f.read_bytes() for f in chosen)
    logger.debug("stdlib %s split: %d files, %d bytes", split, len(chosen), len(blob))
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8).clone()


def shuffled_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless epochs of (x, y) batches, reshuffled each epoch from `seed`; a short last batch is dropped."""
    check_batch_size(batch_size)
    if batch_size > len(x):
        raise DataError(f"batch_size {batch_size} is larger than the data set ({len(x)} examples)")
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield x[idx], y[idx]


def byte_windows(
    data: torch.Tensor, batch_size: int, block_size: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches of random windows: inputs (B, T) and next-byte targets (B, T), as int64."""
    check_batch_size(batch_size)
    if len(data) <= block_size + 1:
        raise DataError(f"text of {len(data)} bytes is too short for windows of {block_size}")
    gen = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(data) - block_size - 1, (batch_size,), generator=gen)
        window = torch.stack([data[s : s + block_size + 1] for s in starts.tolist()]).long()
        yield window[:, :-1], window[:, 1:]
