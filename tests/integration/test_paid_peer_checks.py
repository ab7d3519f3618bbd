"""A paid stage peer checks the experiment before any transaction (issue 13): the check the CLI runs
(`swarm.apps.roles.stage.check_paid_experiment`), on a real anvil with the real escrow."""

from __future__ import annotations

import pytest

from swarm.apps.config import PeerConfig
from swarm.apps.roles.stage import check_paid_experiment
from swarm.chain import DevChain
from swarm.chain.safety import UnsafeExperiment
from swarm.chain.testing import EscrowWorld

pytestmark = pytest.mark.integration


def test_a_paid_peer_refuses_an_experiment_whose_verifier_is_not_ours_before_staking() -> None:
    with DevChain(accounts=3) as chain:
        world = EscrowWorld(chain)
        x = world.create_experiment(audits=1, pool=1_000)  # the stand-in verifier: not a circuit we prove for
        peer = world.peers[0]
        stake_before = peer.stake_of()
        with pytest.raises(UnsafeExperiment, match="not one we prove for") as caught:
            check_paid_experiment(peer, x, PeerConfig.model_construct(prover_workers=1, prover_key_dir=None))
        assert caught.value.exit_code == 5 and caught.value.summary.startswith("refusing the experiment")
        assert peer.stake_of() == stake_before  # nothing was sent
