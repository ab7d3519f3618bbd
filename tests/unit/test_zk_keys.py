"""Verifier renaming, key folders and the circuit's argument encoding (no processes)."""

from __future__ import annotations

import pytest

from zk.chunk_prover import witness_args
from zk.circuit import SMALL_PARAMS
from zk.commit import ChunkOpening
from zk.keys import DEV_ENTROPY, has_keys, keys_dir, rename_verifier
from zk.prover import ProofError

EXPORTED = """pragma solidity ^0.8.0;
library Pairing { function P1() pure internal returns (uint) { return 1; } }
contract Verifier {
    using Pairing for *;
    function verifyTx(Proof memory proof, uint[4] memory input) public view returns (bool r) { return true; }
}
"""


def test_exported_verifier_is_renamed_and_marked_as_development():
    out = rename_verifier(EXPORTED, SMALL_PARAMS)
    assert "contract ChunkVerifier {" in out and "contract Verifier" not in out
    assert "library ChunkPairing" in out and "using ChunkPairing for" in out and " Pairing " not in out
    assert out.startswith("// SPDX-License-Identifier: MIT") and SMALL_PARAMS.circuit_id in out
    assert "single-party setup" in out


def test_a_verifier_without_the_expected_contract_is_refused():
    with pytest.raises(ProofError, match="no `contract Verifier`"):
        rename_verifier("contract Other {}", SMALL_PARAMS)


def test_development_and_private_keys_live_apart(tmp_path):
    dev, private = keys_dir(SMALL_PARAMS, tmp_path, DEV_ENTROPY), keys_dir(SMALL_PARAMS, tmp_path, None)
    assert dev != private and dev.name == SMALL_PARAMS.circuit_id
    assert not has_keys(SMALL_PARAMS, tmp_path)
    g16_dev, g16_own = (keys_dir(SMALL_PARAMS, tmp_path, e, backend="groth16py") for e in (DEV_ENTROPY, None))
    assert g16_dev.name == f"{SMALL_PARAMS.circuit_id}-groth16py-dev"  # zokrates-js's dev keys, converted
    assert len({dev, private, g16_dev, g16_own}) == 4


def test_witness_args_encode_codes_as_bytes_and_fields_as_decimals():
    opening = ChunkOpening(chunk=3, values=[-127, 0, 127], scales=[5], sibling_hashes=[11], sibling_norms=[12])
    args = witness_args(1, 2, 3, 4, opening)
    assert args[:4] == ["1", "2", "3", "4"]
    assert args[4] == ["0x00", "0x7f", "0xfe"] and args[5] == ["0x00000005"]
    assert args[6:] == [["11"], ["12"]]
