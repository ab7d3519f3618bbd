"""ChainClient against a real anvil: dead RPCs, lost responses, decoded reverts, keys kept secret."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from web3 import Web3

from swarm.chain import ChainError, DevChain, RevertError
from swarm.chain.client import ChainClient
from swarm.chain.deploy import DemoConfig, deploy_demo
from swarm.chain.wallet import Wallet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chain() -> Iterator[DevChain]:
    with DevChain(accounts=3) as c:
        yield c


class LosesFirstSendReply(Web3.HTTPProvider):
    """Forwards eth_sendRawTransaction to the node, then pretends the connection dropped (once)."""

    lost = 0

    def make_request(self, method, params):
        reply = super().make_request(method, params)
        if method == "eth_sendRawTransaction" and not self.lost:
            self.lost += 1
            raise requests.exceptions.ConnectionError("connection reset by peer (simulated)")
        return reply


def test_deploy_demo_funds_an_experiment_and_stakes_every_peer(chain: DevChain) -> None:
    d = deploy_demo(chain, DemoConfig(verifier="StandInChunkVerifier"))
    client = ChainClient(chain.rpc_url, escrow=d.escrow)  # read-only: no wallet needed
    assert client.experiment(d.experiment_id).pool == DemoConfig().pool
    assert [client.stake_of(p).active for p in d.peers] == [DemoConfig().stake] * 2
    with pytest.raises(ChainError, match="no wallet"):
        client.finalize(d.experiment_id, 0)


def test_a_lost_send_reply_neither_loses_nor_duplicates_the_transaction(chain: DevChain) -> None:
    client = ChainClient(chain.rpc_url, Wallet(chain.accounts[1].private_key))
    nonce_before = client.w3.eth.get_transaction_count(client.address)
    client.w3.provider = LosesFirstSendReply(chain.rpc_url)
    address, receipt = client.deploy("TestToken")
    assert client.w3.provider.lost == 1
    assert receipt["status"] == 1 and client.w3.eth.get_code(address) != b""
    assert client.w3.eth.get_transaction_count(client.address) == nonce_before + 1  # sent exactly once
    assert client.unconfirmed == {}
    _, again = client.deploy("TestToken")  # and the next transaction takes the next nonce
    assert client.w3.eth.get_transaction(again["transactionHash"])["nonce"] == nonce_before + 1


def test_reverts_are_decoded_by_name(chain: DevChain) -> None:
    d = deploy_demo(chain, DemoConfig(verifier="StandInChunkVerifier"), stakers=[])
    client = ChainClient(chain.rpc_url, Wallet(chain.accounts[2].private_key), escrow=d.escrow)
    with pytest.raises(RevertError) as info:
        client.finalize(d.experiment_id, 0)
    assert info.value.error_name == "NotFinalizable"
    assert "NotFinalizable(round=0, finalizableAt=" in str(info.value)
    with pytest.raises(RevertError, match="UnknownExperiment") as info:
        client.experiment(12345)
    assert info.value.error_args == (12345,)


def test_a_dead_rpc_gives_a_clear_error() -> None:
    with DevChain(accounts=1) as dead:
        url, key = dead.rpc_url, dead.accounts[0].private_key
        client = ChainClient(url, Wallet(key))
    with pytest.raises(ChainError, match=r"RPC at http://127\.0\.0\.1:\d+ did not answer .* check that the node"):
        client.block_timestamp()
    with pytest.raises(ChainError, match="did not answer"):
        client.deploy("TestToken")


def test_the_key_never_shows_in_repr_or_errors(chain: DevChain) -> None:
    key = chain.accounts[1].private_key.get_secret_value()
    client = ChainClient(chain.rpc_url, Wallet(key))
    assert key.removeprefix("0x") not in repr(client) + repr(client.wallet) + str(client.wallet)
    owner = ChainClient(chain.rpc_url, Wallet(chain.accounts[0].private_key))
    token, _ = owner.deploy("TestToken")
    with pytest.raises(RevertError, match="OwnableUnauthorizedAccount") as info:  # only the owner mints
        client.transact("mint", client.address, 1, contract=client.contract("TestToken", token))
    assert key.removeprefix("0x") not in str(info.value)
