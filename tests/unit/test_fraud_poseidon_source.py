"""The committed Solidity Poseidon (contracts/fraud/Poseidon.sol) is what its generator makes from zk's constants,
and a record's evidence fields refuse what is not an address (so a part's digest can always be computed)."""

from __future__ import annotations

import importlib.util

import pytest

from swarm.chain.paths import CONTRACTS_DIR
from swarm.rounds.parts import CommitRecord, PartError


def test_the_generated_poseidon_is_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("make_poseidon", CONTRACTS_DIR / "fraud" / "make_poseidon.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.OUT.read_text() == gen.render(), "run .venv/bin/python contracts/fraud/make_poseidon.py"


def test_a_record_names_addresses_or_nothing() -> None:
    base = {"peer_id": "p", "round": 0, "stage": 0, "root": 1, "norm_sq": 1, "numel": 1, "num_chunks": 1,
            "part_key": bytes(32), "anchor_round": -1, "anchor_digest": bytes(32)}
    assert CommitRecord(**base).domain is None
    ok = CommitRecord(**base, wallet="0x" + "ab" * 20, escrow="0x" + "cd" * 20, chain_id=1, chain_experiment=2)
    assert ok.domain is not None and ok.domain.experiment_id == 2
    for bad in ("0x12", "not an address", "0x" + "zz" * 20):
        wire = {**CommitRecord(**base).to_wire(), "wallet": bad}
        with pytest.raises(PartError):
            CommitRecord.from_wire(wire)
