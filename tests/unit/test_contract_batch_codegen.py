"""The committed batch verifiers are exactly what zk/batch_verifier.py writes from their keys (no drift), and the
batch function sits next to an unchanged verifyTx."""

from __future__ import annotations

from pathlib import Path

import pytest

from zk.batch_verifier import render_batch_verifier
from zk.fast_verifier import load_verification_key, render_fast_verifier

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = [
    ("contracts/standin/verification.key.json", "contracts/standin/BatchStandInChunkVerifier.sol",
     "BatchStandInChunkVerifier"),
    ("zk/keys/cd3e17aab3adf206/verification.key.json", "contracts/batch/BatchChunkVerifier.sol", "BatchChunkVerifier"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "sol", "name"), COMMITTED)
def test_committed_batch_verifier_matches_its_generator(key: str, sol: str, name: str) -> None:
    vk = load_verification_key(ROOT / key)
    source = render_batch_verifier(vk, name, key)
    assert (ROOT / sol).read_text() == source, f"rerun: python -m zk.batch_verifier {key} --out {sol} --contract {name}"
    single = render_fast_verifier(vk, name, key)
    start = single.index("    function verifyTx(")
    assert single[start:single.rindex("}")] in source  # verifyTx is the fast verifier's, word for word
    assert source.count("function verifyBatch(uint256[] calldata batch)") == 1
    assert f"div(batch.length, {8 + vk.num_inputs})" in source

