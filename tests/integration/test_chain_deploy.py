"""`python -m swarm.chain deploy` against a real anvil in OP-stack mode (our DevChain): the chain id is checked,
transactions are EIP-1559, the addresses land in a deployment file, and the demo deploys its experiment on the
escrow that file names."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from web3 import Web3

from swarm.chain import DevChain
from swarm.chain.__main__ import main
from swarm.chain.client import ChainClient
from swarm.chain.deploy import DemoConfig, Deployment, deploy_demo
from swarm.chain.errors import ChainError
from swarm.chain.wallet import create_key_file

pytestmark = pytest.mark.integration


def test_deploy_command_writes_a_deployment_the_demo_uses(chain: DevChain, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    key = tmp_path / "deployer.key"
    create_key_file(key, chain.accounts[0].private_key)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    out = tmp_path / "deployment.json"
    base = ["deploy", "--rpc", chain.rpc_url, "--key-file", str(key), "--out", str(out)]

    assert main([*base, "--chain-id", str(chain.chain_id + 1)]) == ChainError.exit_code
    assert "not the expected" in capsys.readouterr().err and not out.exists()  # nothing deployed

    before = chain.rpc("eth_blockNumber", [])
    assert main([*base, "--chain-id", str(chain.chain_id), "--verifier", "BatchChunkVerifier",
                 "--batch-fee", "5"]) == 0  # fmt: skip
    assert "written to" in capsys.readouterr().out
    assert chain.accounts[0].private_key.get_secret_value()[2:] not in out.read_text()  # no key in the file
    dep = Deployment.load(out)
    assert (dep.chain_id, dep.rpc_url, dep.verifier_name) == (chain.chain_id, chain.rpc_url, "BatchChunkVerifier")
    client = ChainClient(dep.rpc_url, escrow=dep.escrow)
    assert client.read("token") == dep.token and client.read("batchFee") == 5
    shape = client.registered_shape(dep.verifier)
    assert shape is not None and shape.batch and shape.chunk == 1024
    w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
    for n in range(int(before, 16) + 1, w3.eth.block_number + 1):  # every deployment transaction: EIP-1559
        for tx in w3.eth.get_block(n, full_transactions=True)["transactions"]:
            assert tx["type"] == 2 and tx["maxFeePerGas"] >= tx["maxPriorityFeePerGas"]

    demo = deploy_demo(chain, DemoConfig(), stakers=[1], deployment=Deployment.load(out))
    assert (demo.escrow, demo.verifier, demo.token) == (dep.escrow, dep.verifier, dep.token)
    assert client.experiment(demo.experiment_id).verifier == dep.verifier
    assert client.stake_of(demo.peers[0]).active == DemoConfig().stake
    demo.save(tmp_path / "demo.json")
    assert Deployment.load(tmp_path / "demo.json").escrow == dep.escrow  # a demo's file reads as its stack

    with pytest.raises(ChainError, match="cannot read the deployment file"):
        Deployment.load(tmp_path / "missing.json")
    other = dep.model_copy(update={"chain_id": 10})
    with pytest.raises(ChainError, match="is on chain 10"):
        deploy_demo(chain, DemoConfig(), stakers=[], deployment=other)
