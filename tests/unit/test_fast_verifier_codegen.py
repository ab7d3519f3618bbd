"""zk/fast_verifier.py without a chain: reading and checking a ZoKrates key, and what the generator writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zk.fast_verifier import (
    BASE_FIELD,
    FastVerifierError,
    load_verification_key,
    render_fast_verifier,
    write_fast_verifier,
)

STANDIN_KEY = Path(__file__).resolve().parents[2] / "contracts" / "standin" / "verification.key.json"


def key_json() -> dict:
    return json.loads(STANDIN_KEY.read_text())


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "verification.key.json"
    path.write_text(json.dumps(data))
    return path


def test_a_zokrates_key_reads_its_g2_points_as_c0_c1() -> None:
    vk = load_verification_key(STANDIN_KEY)
    raw = key_json()
    assert vk.num_inputs == 4
    assert vk.beta == tuple(tuple(int(x, 16) for x in pair) for pair in raw["beta"])


def test_a_key_with_g2_coordinates_in_the_precompiles_order_is_refused_with_a_hint(tmp_path: Path) -> None:
    raw = key_json()
    raw["gamma"] = [[pair[1], pair[0]] for pair in raw["gamma"]]
    with pytest.raises(FastVerifierError, match=r"gamma is not a G2 point.*\[c1, c0\]"):
        load_verification_key(write(tmp_path, raw))


def test_a_g1_point_off_the_curve_is_refused(tmp_path: Path) -> None:
    raw = key_json()
    raw["gamma_abc"][2][1] = hex(int(raw["gamma_abc"][2][1], 16) ^ 1)
    with pytest.raises(FastVerifierError, match=r"gamma_abc\[2\] is not a G1 point"):
        load_verification_key(write(tmp_path, raw))


@pytest.mark.parametrize(
    ("data", "message"),
    [({"scheme": "gm17", "curve": "bn128"}, "gm17/bn128"), ([1, 2], "list"),
     ({"scheme": "g16", "curve": "bn128", "alpha": ["0x1"]}, "not a zokrates-js verification key")],
)  # fmt: skip
def test_a_key_of_another_kind_gets_a_clear_error(tmp_path: Path, data: object, message: str) -> None:
    with pytest.raises(FastVerifierError, match=message):
        load_verification_key(write(tmp_path, data))


def test_a_missing_key_says_to_run_the_setup(tmp_path: Path) -> None:
    with pytest.raises(FastVerifierError, match="python -m zk setup"):
        load_verification_key(tmp_path / "nope.json")


def test_the_contract_inlines_the_key_with_g2_negated_and_in_the_precompiles_order() -> None:
    vk = load_verification_key(STANDIN_KEY)
    source = render_fast_verifier(vk, "SomeVerifier")
    (x0, x1), (y0, y1) = vk.delta
    for name, value in [("NEG_DELTA_X1", x1), ("NEG_DELTA_X0", x0), ("NEG_DELTA_Y1", BASE_FIELD - y1),
                        ("NEG_DELTA_Y0", BASE_FIELD - y0), ("IC4_Y", vk.gamma_abc[4][1])]:
        assert f"uint256 private constant {name} = 0x{value:064x};" in source
    assert "contract SomeVerifier {" in source
    assert "uint256[4] calldata input" in source
    assert source.count("staticcall(gas(), 0x07") == 4 and source.count("staticcall(gas(), 0x08") == 1


def test_write_names_the_key_it_was_made_from(tmp_path: Path) -> None:
    out = write_fast_verifier(STANDIN_KEY, tmp_path / "V.sol", "V")
    assert "from contracts/standin/verification.key.json" in out.read_text().splitlines()[1]
