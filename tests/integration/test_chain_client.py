"""ChainClient against a real anvil: dead RPCs, lost responses, decoded reverts, keys kept secret."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
from web3 import Web3

from swarm.chain import ChainError, DevChain, RevertError
from swarm.chain.client import ChainClient
from swarm.chain.deploy import DemoConfig, deploy_demo
from swarm.chain.safety import UnsafeExperiment, check_experiment
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


def test_a_stuck_transaction_is_repriced_and_replaced_under_the_same_nonce(chain: DevChain) -> None:
    client = ChainClient(chain.rpc_url, Wallet(chain.accounts[1].private_key), replace_after=0.5)
    token, _ = client.deploy("TestToken")
    token_contract = client.contract("TestToken", token)
    nonce = client.w3.eth.get_transaction_count(client.address)
    chain.rpc("evm_setAutomine", [False])
    stop = threading.Event()

    def blocks_too_expensive_for_the_first_version() -> None:
        while not stop.is_set():  # every block's base fee is far above what the first version offers
            chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(10**12)])
            chain.rpc("evm_mine", [])
            stop.wait(0.3)

    miner = threading.Thread(target=blocks_too_expensive_for_the_first_version, daemon=True)
    try:
        miner.start()
        receipt = client.transact("approve", client.address, 1, contract=token_contract)
    finally:
        stop.set()
        miner.join()
        chain.rpc("evm_setAutomine", [True])
    mined = client.w3.eth.get_transaction(receipt["transactionHash"])
    assert mined["nonce"] == nonce and receipt["status"] == 1
    assert mined["maxFeePerGas"] >= 10**12  # a re-priced version was mined
    assert client.w3.eth.get_transaction_count(client.address) == nonce + 1  # exactly one of the versions
    assert client.unconfirmed == {}


def test_a_base_fee_that_rose_before_sending_is_met_not_an_error(chain: DevChain) -> None:
    """The node refuses a transaction whose max fee is under the next block's base fee; the client re-prices it
    (same nonce) instead of failing. Before the fix it read only the latest block's base fee and raised."""
    client = ChainClient(chain.rpc_url, Wallet(chain.accounts[0].private_key))
    token, _ = client.deploy("TestToken")
    token_contract = client.contract("TestToken", token)
    nonce = client.w3.eth.get_transaction_count(client.address)
    chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(10**12)])  # the latest block still says 1 gwei
    receipt = client.transact("approve", client.address, 1, contract=token_contract)
    mined = client.w3.eth.get_transaction(receipt["transactionHash"])
    assert receipt["status"] == 1 and mined["nonce"] == nonce and mined["maxFeePerGas"] >= 10**12


def test_two_clients_of_one_key_never_take_the_same_nonce(chain: DevChain) -> None:
    key = chain.accounts[2].private_key
    a, b = (ChainClient(chain.rpc_url, Wallet(key)) for _ in range(2))
    token, _ = a.deploy("TestToken")
    start = a.w3.eth.get_transaction_count(a.address)
    receipts: list = []
    errors: list = []

    def send(c: ChainClient) -> None:
        contract = c.contract("TestToken", token)
        for i in range(5):
            try:
                receipts.append(c.transact("approve", c.address, i, contract=contract))
            except ChainError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=send, args=(c,)) for c in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    nonces = sorted(a.w3.eth.get_transaction(r["transactionHash"])["nonce"] for r in receipts)
    assert nonces == list(range(start, start + 10))


def test_the_demo_experiment_passes_the_peer_check_with_zks_real_verifier(chain: DevChain) -> None:
    d = deploy_demo(chain, DemoConfig(verifier="FastChunkVerifier"), stakers=[])
    client = ChainClient(chain.rpc_url, escrow=d.escrow)
    state = check_experiment(client, d.experiment_id)  # defaults: zk's verifiers, DEFAULT_PARAMS, one worker
    assert state.audit_window == DemoConfig().audit_window
    check_experiment(client, d.experiment_id, proof_seconds=20, prover_workers=2)  # 2 workers: half the time
    with pytest.raises(UnsafeExperiment, match="an honest peer would be slashed"):
        check_experiment(client, d.experiment_id, proof_seconds=20)  # a slower machine with one worker
