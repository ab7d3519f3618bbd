"""DHT record schemas: the pydantic models and the strict wire schemas hivemind's SchemaValidator applies."""

from __future__ import annotations

import pytest
from hivemind.dht.crypto import RSASignatureValidator
from hivemind.dht.protocol import DHTProtocol
from hivemind.dht.routing import DHTID
from hivemind.dht.schema import SchemaValidator
from hivemind.dht.validation import DHTRecord
from hivemind.p2p import PeerID
from hivemind.utils.crypto import RSAPrivateKey
from pydantic import ValidationError

from swarm.errors import RecordError
from swarm.network.records import (
    ExperimentRecord,
    ExperimentSchema,
    StageAnnouncement,
    _check_name,
    experiment_key,
    stages_key,
)

PEER = PeerID(b"\x00\x10" + bytes([7]) * 16).to_base58()
OWNER = RSASignatureValidator(RSAPrivateKey()).local_public_key


def ann(**changes) -> StageAnnouncement:
    fields = {
        "peer_id": PEER,
        "stage": 1,
        "throughput": 12.5,
        "load": 2,
        "params_version": 3,
        "wallet": None,
    } | changes
    return StageAnnouncement(**fields)


def experiment(**changes) -> ExperimentRecord:
    fields = {
        "name": "exp",
        "workload": "digits",
        "n_stages": 2,
        "round_duration": 5.0,
        "start_time": 1e9,
    } | changes
    return ExperimentRecord(**fields)


def schema_accepts(key: str, value: object, subkey: bytes = OWNER, prefix: str = "exp") -> bool:
    validator = SchemaValidator(ExperimentSchema, allow_extra_keys=True, prefix=prefix)
    record = DHTRecord(
        key=DHTID.generate(source=key).to_bytes(),
        subkey=DHTProtocol.serializer.dumps(subkey),
        value=DHTProtocol.serializer.dumps(value),
        expiration_time=0.0,
    )
    return validator.validate(record)


def test_good_records_pass_the_wire_schema():
    assert schema_accepts(stages_key("exp"), ann().to_wire())
    assert schema_accepts(stages_key("exp"), ann(wallet="0x" + "aB" * 20).to_wire())
    assert schema_accepts(experiment_key("exp"), experiment().to_wire())
    assert schema_accepts(experiment_key("exp"), experiment(chain_experiment_id=7).to_wire())


def test_integer_throughput_still_goes_out_as_a_float():
    wire = ann(throughput=3).to_wire()
    assert isinstance(wire["throughput"], float)
    assert schema_accepts(stages_key("exp"), wire)


@pytest.mark.parametrize(
    "change",
    [
        {"stage": "1"},  # a string where an int belongs: no silent conversion
        {"stage": -1},
        {"throughput": -1.0},
        {"throughput": 5},  # strict float
        {"load": 1.5},
        {"wallet": "0x1234"},
        {"extra": 1},
    ],
)
def test_malformed_stage_records_fail_the_wire_schema(change):
    assert not schema_accepts(stages_key("exp"), ann().to_wire() | change)


def test_stage_record_without_a_public_key_subkey_fails():
    assert not schema_accepts(stages_key("exp"), ann().to_wire(), subkey=b"not-an-owner-key")


def test_other_experiments_keys_are_not_this_schemas_business():
    assert schema_accepts(stages_key("other"), {"anything": "goes"})
    assert not schema_accepts(stages_key("other"), {"anything": "goes"}, prefix="other")


@pytest.mark.parametrize(
    "change",
    [
        {"peer_id": "not base58 !"},
        {"stage": 1 << 16},
        {"throughput": float("nan")},
        {"load": -1},
        {"wallet": "0xZZ" + "0" * 38},
    ],
)
def test_stage_announcement_rejects_bad_fields(change):
    with pytest.raises(ValidationError):
        ann(**change)


@pytest.mark.parametrize(
    "change",
    [{"name": "a b"}, {"name": ""}, {"n_stages": 0}, {"round_duration": 0.0}, {"chain_experiment_id": -1}],
)
def test_experiment_record_rejects_bad_fields(change):
    with pytest.raises(ValidationError):
        experiment(**change)


def test_records_round_trip_through_their_wire_form():
    assert StageAnnouncement.model_validate(ann().to_wire()) == ann()
    assert ExperimentRecord.model_validate(experiment().to_wire()) == experiment()


def test_bad_experiment_names_get_a_clear_error():
    _check_name("my-run_2")
    with pytest.raises(RecordError, match="letters, digits"):
        _check_name("my run")
    with pytest.raises(RecordError, match="letters, digits"):
        _check_name("x" * 65)


def test_the_experiment_record_carries_the_seed_of_the_initial_parameters():
    record = experiment(seed=7)
    assert schema_accepts(experiment_key("exp"), record.to_wire())
    assert ExperimentRecord(**record.to_wire()).seed == 7
    assert experiment().seed == 0
    assert not schema_accepts(experiment_key("exp"), experiment().to_wire() | {"seed": -1})
