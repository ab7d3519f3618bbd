"""Chain binding (issue 9, "complete binding"): a contribution made payable on one chain cannot be replayed onto
another. The proof names no chain (nor escrow, nor experiment); a peer's own `contribute` is bound by its signed
transaction (EIP-155 chain id), a batch entry by the peer's `allowBatches` on that chain's escrow.

Two real anvils with different chain ids, the same deployer and the same nonces: the escrow has the same address
and the experiment the same id on both, the worst case for a replay.
"""

from __future__ import annotations

import pytest

from swarm.chain import DevChain, DevChainError
from swarm.chain.testing import EscrowWorld
from swarm.chain.tx import PendingTx

pytestmark = pytest.mark.integration


def test_a_contribution_signed_for_one_chain_is_refused_on_another() -> None:
    with DevChain(accounts=3, chain_id=31337) as chain_a, DevChain(accounts=3, chain_id=31338) as chain_b:
        a, b = EscrowWorld(chain_a), EscrowWorld(chain_b)
        assert a.escrow == b.escrow  # the same escrow address on both chains
        exp = a.create_experiment(pool=1_000)
        assert b.create_experiment(pool=1_000) == exp  # and the same experiment id
        peer_a, peer_b = a.peers[0], b.peers[0]  # one wallet (anvil's dev keys) on both chains
        assert peer_a.address == peer_b.address
        for p in (peer_a, peer_b):
            p.stake(200)
        (c,) = a.prove([a.contribution(peer_a, exp, 0, 0, 42)], exp)
        signed: list[PendingTx] = []
        peer_a.on_signed(signed.append)
        peer_a.contribute(c)
        assert a.funder.record(exp, 0, 0, peer_a.address).exists
        (raw,) = signed
        nonce_b = int(chain_b.rpc("eth_getTransactionCount", [peer_b.address, "latest"]), 16)
        assert raw.nonce == nonce_b  # the replay is refused for its chain id, not for a stale nonce
        with pytest.raises(DevChainError, match="invalid chain id"):  # anvil's words for an EIP-155 mismatch
            chain_b.rpc("eth_sendRawTransaction", ["0x" + raw.raw.hex()])
        assert not b.funder.record(exp, 0, 0, peer_b.address).exists

        # a batch is anyone's transaction: on chain b the peer allowed no batches, so the entry is skipped
        peer_a.allow_batches(exp)  # (on chain a only)
        result = b.peers[1].contribute_batch([c], precheck=False)
        assert result.included == [] and result.skipped == [(c, "not allowed")]
        assert not b.funder.record(exp, 0, 0, peer_b.address).exists and peer_b.stake_of().locked == 0

        peer_b.contribute(c)  # the proof itself verifies there: only the peer's own signature put it on chain b
        assert b.funder.record(exp, 0, 0, peer_b.address).exists
