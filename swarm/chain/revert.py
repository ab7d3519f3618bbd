"""Decoding revert data into a custom error's name and arguments, from the contracts' ABIs."""

from __future__ import annotations

from collections.abc import Iterable

from eth_abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak

_PANIC_CODES = {
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division by zero",
    0x21: "invalid enum value",
    0x32: "array index out of bounds",
    0x41: "out of memory",
}


def _abi_type(param: dict) -> str:
    """The canonical ABI type of an input (tuples expanded)."""
    t = param["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in param["components"]) + ")" + t[len("tuple") :]
    return t


class ErrorDecoder:
    """Maps 4-byte selectors of custom errors (plus Error(string) and Panic(uint256)) to names."""

    def __init__(self, abis: Iterable[list[dict]]) -> None:
        self._errors: dict[bytes, tuple[str, list[str], list[str]]] = {
            bytes.fromhex("08c379a0"): ("Error", ["string"], ["message"]),
            bytes.fromhex("4e487b71"): ("Panic", ["uint256"], ["code"]),
        }
        for abi in abis:
            for item in abi:
                if item.get("type") != "error":
                    continue
                types = [_abi_type(p) for p in item["inputs"]]
                selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
                self._errors[selector] = (item["name"], types, [p["name"] for p in item["inputs"]])

    def decode(self, data: bytes | str | None) -> tuple[str | None, tuple, str]:
        """(name, args, human text) for revert data; name is None when the selector is unknown."""
        if isinstance(data, str):
            data = bytes.fromhex(data.removeprefix("0x")) if _is_hex(data) else b""
        if not data or len(data) < 4:
            return None, (), "reverted without a reason"
        entry = self._errors.get(data[:4])
        if entry is None:
            return None, (), f"reverted with unknown error 0x{data[:4].hex()}"
        name, types, names = entry
        try:
            args = tuple(decode(types, data[4:]))
        except DecodingError:
            return name, (), f"{name} (undecodable arguments)"
        if name == "Panic":
            return name, args, f"Panic: {_PANIC_CODES.get(args[0], hex(args[0]))}"
        text = ", ".join(f"{n}={_show(v)}" for n, v in zip(names, args, strict=True))
        return name, args, f"{name}({text})"


def _is_hex(s: str) -> bool:
    body = s.removeprefix("0x")
    return len(body) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in body)


def _show(v: object) -> str:
    return f"0x{v.hex()}" if isinstance(v, bytes) else str(v)
