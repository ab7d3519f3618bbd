"""The shared Contribution record: packing, wire form and the errors it gives for bad input."""

import msgpack
import pytest
from pydantic import ValidationError

from protocol.contribution import FIELD_MODULUS, Contribution, ContributionError, Groth16Proof

PEER = "0x" + "Ab" * 20


def make(**kw):
    base = {"experiment": 7, "round": 12, "stage": 2, "peer": PEER, "root": FIELD_MODULUS - 1, "norm_sq": 3, "chunk": 9}
    return Contribution(**(base | kw))


def test_context_packs_each_field_into_its_own_bits():
    c = make()
    ctx = c.context()
    assert ctx < FIELD_MODULUS
    assert ctx & ((1 << 24) - 1) == 9
    assert (ctx >> 24) & 0xFFFF == 2
    assert (ctx >> 40) & ((1 << 48) - 1) == 12
    assert ctx >> 88 == int(PEER, 16)


@pytest.mark.parametrize("field", ["round", "stage", "chunk"])
def test_context_changes_with_every_bound_field(field):
    assert make().context() != make(**{field: getattr(make(), field) + 1}).context()


def test_context_changes_with_peer():
    assert make().context() != make(peer="0x" + "ab" * 19 + "ac").context()


def test_msgpack_round_trip_with_proof():
    proof = Groth16Proof(a=(1, 2), b=((3, 4), (5, 6)), c=(7, FIELD_MODULUS - 2))
    c = make(proof=proof)
    assert Contribution.from_msgpack(c.to_msgpack()) == c


def test_zokrates_proof_form_round_trips():
    proof = Groth16Proof(a=(1, 2), b=((3, 4), (5, 6)), c=(7, 8))
    assert Groth16Proof.from_zokrates(proof.to_zokrates()) == proof
    with pytest.raises(ContributionError):
        Groth16Proof.from_zokrates({"a": ["zz"]})


@pytest.mark.parametrize(
    "raw",
    [b"", b"\xff\xff", msgpack.packb("a string"),
     msgpack.packb({"experiment": 1, "round": 1, "stage": 0, "peer": PEER, "root": b"short", "norm_sq": b"\x00" * 16}),
     msgpack.packb({"experiment": 1, "round": 1, "stage": 0, "peer": "nope", "root": b"\x00" * 32,
                    "norm_sq": b"\x00" * 16})],
)
def test_malformed_wire_form_raises_contribution_error(raw):
    with pytest.raises(ContributionError):
        Contribution.from_msgpack(raw)


def test_out_of_range_values_are_refused():
    with pytest.raises(ValidationError):
        make(root=FIELD_MODULUS)
    with pytest.raises(ValidationError):
        make(round=1 << 48)
    with pytest.raises(ValidationError):
        make(stage=1 << 16)
