"""Signed, typed DHT records through real hivemind DHTs (each with its own p2pd): forged or malformed ones lose."""

from __future__ import annotations

import uuid

import hivemind
import pytest
from hivemind.dht.crypto import RSASignatureValidator
from hivemind.utils import get_dht_time
from hivemind.utils.crypto import RSAPrivateKey

from swarm.network.dht import (
    JoinError,
    create_dht,
    local_dhts,
    owner_subkey,
    peer_id_of_owner,
    visible_multiaddrs,
)
from swarm.network.records import (
    ExperimentRecord,
    StageAnnouncement,
    announce_stage,
    experiment_key,
    fetch_experiment,
    fetch_stage_announcements,
    publish_experiment,
    stages_key,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
def experiment() -> str:
    return f"rec{uuid.uuid4().hex[:8]}"


def announcement(dht: hivemind.DHT, stage: int, throughput: float = 10.0) -> StageAnnouncement:
    return StageAnnouncement(
        peer_id=dht.peer_id.to_base58(), stage=stage, throughput=throughput, load=0, params_version=0
    )


def test_peers_read_each_others_announcements_and_experiment(experiment):
    with local_dhts(3) as (a, b, c):
        assert announce_stage(a, experiment, announcement(a, 0))
        assert announce_stage(b, experiment, announcement(b, 1, throughput=4.0))
        assert announce_stage(
            b, experiment, announcement(b, 1, throughput=5.0)
        )  # a refresh replaces, not adds
        record = ExperimentRecord(
            name=experiment, workload="digits", n_stages=2, round_duration=5.0, start_time=get_dht_time()
        )
        assert publish_experiment(a, record)
        seen = fetch_stage_announcements(c, experiment)
        assert {s: [x.peer_id for x in anns] for s, anns in seen.items()} == {
            0: [a.peer_id.to_base58()],
            1: [b.peer_id.to_base58()],
        }
        assert seen[1][0].throughput == 5.0
        assert fetch_experiment(c, experiment) == record
        assert fetch_experiment(c, experiment + "x") is None
        assert fetch_stage_announcements(c, experiment + "x") == {}


def test_expired_announcements_are_not_returned(experiment):
    with local_dhts(2) as (a, b):
        assert announce_stage(a, experiment, announcement(a, 0), ttl=0.5)
        assert announce_stage(b, experiment, announcement(b, 1), ttl=60.0)
        import time

        time.sleep(1.0)
        assert list(fetch_stage_announcements(b, experiment)) == [1]


def test_forged_and_malformed_records_are_rejected(experiment):
    """An attacker whose DHT runs without our validators tries to overwrite another peer's records."""
    with local_dhts(2, experiments=[experiment]) as (honest, reader):
        mine = announcement(honest, 0, throughput=10.0)
        assert announce_stage(honest, experiment, mine, ttl=60.0)
        record = ExperimentRecord(
            name=experiment, workload="digits", n_stages=2, round_duration=5.0, start_time=1.0
        )
        assert publish_experiment(honest, record)
        attacker_key = RSASignatureValidator(RSAPrivateKey())
        attacker = hivemind.DHT(
            initial_peers=visible_multiaddrs(honest), start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"],
            record_validators=[attacker_key],
        )  # fmt: skip
        try:
            later = get_dht_time() + 120
            forged = mine.model_copy(update={"throughput": 9999.0}).to_wire()
            attacker.store(stages_key(experiment), forged, later, subkey=owner_subkey(honest))  # not its key
            attacker.store(  # its own signed subkey, but the value breaks the schema
                stages_key(experiment),
                forged | {"stage": "zero"},
                later,
                subkey=attacker_key.local_public_key,
            )
            attacker.store(stages_key(experiment), forged, later, subkey=b"unsigned")  # no owner key at all
            attacker.store(stages_key(experiment), "a plain value", later)
            bad_record = record.model_copy(update={"n_stages": 7}).to_wire()
            attacker.store(experiment_key(experiment), bad_record, later, subkey=owner_subkey(honest))
            for dht in (reader, honest):
                seen = fetch_stage_announcements(dht, experiment)
                assert seen == {0: [mine]}
                assert fetch_experiment(dht, experiment) == record
        finally:
            attacker.shutdown()


def test_entries_under_unsigned_subkeys_are_dropped_by_readers(experiment):
    """A node that stored junk before it knew the experiment's schema cannot pass it on to readers."""
    with local_dhts(2) as (a, b):
        junk = announcement(b, 0, throughput=9999.0).to_wire()
        assert b.store(stages_key(experiment), junk, get_dht_time() + 60, subkey=b"unsigned")  # no schema yet
        assert announce_stage(a, experiment, announcement(a, 1))
        assert fetch_stage_announcements(b, experiment) == {1: [announcement(a, 1)]}


def test_an_honest_peer_cannot_be_made_to_store_a_malformed_record(experiment):
    with local_dhts(1) as (a,):
        assert announce_stage(a, experiment, announcement(a, 0))
        assert not a.store(
            stages_key(experiment), {"peer_id": 1}, get_dht_time() + 30, subkey=owner_subkey(a)
        )
        assert fetch_stage_announcements(a, experiment)[0][0].peer_id == a.peer_id.to_base58()


@pytest.mark.parametrize(
    "bad",
    [
        "not-an-address",
        "/ip4/127.0.0.1/tcp/1",
        "/ip4/999.0.0.1/tcp/1/p2p/12D3KooWQUUHVa3djatgXsGAaoAYiwSLPZ5zt",
    ],
)
def test_malformed_initial_peer_gets_a_join_error(bad):
    with pytest.raises(JoinError, match="not a full multiaddr"):
        create_dht([bad])


def test_unreachable_initial_peer_gets_a_join_error():
    with local_dhts(1) as (live,):
        peer_id = live.peer_id.to_base58()
    with pytest.raises(JoinError, match="none of the initial peers answered"):
        create_dht([f"/ip4/127.0.0.1/tcp/1/p2p/{peer_id}"], bootstrap_timeout=3.0)


def test_a_port_in_use_or_a_foreign_host_gets_a_join_error():
    with local_dhts(1) as (live,):
        port = int(visible_multiaddrs(live)[0].split("/tcp/")[1].split("/")[0])
        with pytest.raises(JoinError, match="in use"):
            create_dht(port=port)
    with pytest.raises(JoinError, match="not an address of this machine"):
        create_dht(host="192.0.2.1")  # TEST-NET-1: never assigned to a machine


def test_a_peer_id_is_bound_to_the_key_that_signs_its_records():
    with local_dhts(2) as (a, b):
        assert peer_id_of_owner(owner_subkey(a)) == a.peer_id.to_base58()
        assert peer_id_of_owner(owner_subkey(b)) == b.peer_id.to_base58()
    assert peer_id_of_owner(b"unsigned") is None
    assert peer_id_of_owner(b"[owner:ssh-rsa AAAAnot-a-key]") is None


def test_an_announcement_naming_another_peer_is_dropped(experiment):
    with local_dhts(2) as (honest, impostor):
        assert announce_stage(honest, experiment, announcement(honest, 0))
        # a well-formed record under the impostor's own signed subkey, claiming to be the honest peer on stage 1
        assert announce_stage(impostor, experiment, announcement(honest, 1, throughput=99.0))
        assert fetch_stage_announcements(impostor, experiment) == {0: [announcement(honest, 0)]}


def test_a_joiner_believes_its_initial_peers_experiment_record(experiment):
    genuine = ExperimentRecord(
        name=experiment, workload="digits", n_stages=2, round_duration=5.0, start_time=10.0
    )
    fake = genuine.model_copy(update={"n_stages": 5, "start_time": 1.0})
    with local_dhts(3) as (boot, liar1, liar2):
        assert publish_experiment(boot, genuine)
        assert publish_experiment(liar1, fake) and publish_experiment(liar2, fake)  # a majority of two keys
        joiner = create_dht([visible_multiaddrs(boot)[0]])
        try:
            assert fetch_experiment(joiner, experiment) == genuine
        finally:
            joiner.shutdown()
        assert fetch_experiment(boot, experiment) == fake  # no initial peers to trust: the majority wins


def test_an_identity_file_keeps_the_peer_id_across_restarts(tmp_path):
    path = tmp_path / "bootstrap.id"
    with local_dhts(1, identity_path=path) as (first,):
        peer_id = first.peer_id.to_base58()
    assert path.stat().st_mode & 0o777 == 0o600
    with local_dhts(1, identity_path=path) as (again,):
        assert again.peer_id.to_base58() == peer_id
        assert peer_id_of_owner(owner_subkey(again)) == peer_id
    path.write_bytes(b"not a key")
    with pytest.raises(JoinError, match="not an RSA libp2p key"):
        create_dht(identity_path=path)
