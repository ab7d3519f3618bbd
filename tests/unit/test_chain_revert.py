"""Decoding revert data into custom-error names and arguments."""

from __future__ import annotations

from eth_abi import encode
from eth_utils import keccak

from swarm.chain.build import load_artifacts
from swarm.chain.revert import ErrorDecoder


def _decoder() -> ErrorDecoder:
    return ErrorDecoder(a.abi for a in load_artifacts().values())


def test_custom_error_is_decoded_with_its_arguments() -> None:
    data = keccak(text="NotFinalizable(uint256,uint256)")[:4] + encode(["uint256", "uint256"], [3, 1234])
    name, args, text = _decoder().decode("0x" + data.hex())
    assert (name, args) == ("NotFinalizable", (3, 1234))
    assert text == "NotFinalizable(round=3, finalizableAt=1234)"


def test_error_string_panic_unknown_and_empty() -> None:
    d = _decoder()
    assert d.decode(bytes.fromhex("08c379a0") + encode(["string"], ["nope"]))[2] == "Error(message=nope)"
    assert d.decode(bytes.fromhex("4e487b71") + encode(["uint256"], [0x11]))[2] == "Panic: arithmetic overflow or underflow"
    assert d.decode("0xdeadbeef") == (None, (), "reverted with unknown error 0xdeadbeef")
    assert d.decode(None) == (None, (), "reverted without a reason")
    assert d.decode("0x") == (None, (), "reverted without a reason")


def test_truncated_arguments_do_not_raise() -> None:
    data = keccak(text="NotFinalizable(uint256,uint256)")[:4] + b"\x00" * 5
    assert _decoder().decode(data)[0] == "NotFinalizable"
