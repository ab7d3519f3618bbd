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
from swarm.chain.wallet import Wallet, create_key_file

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


def test_swarm_demo_runs_its_economy_on_a_deployment_file(chain: DevChain, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """`swarm-demo --deployment FILE`: no embedded anvil; the researcher's key creates and funds the experiment on
    the file's escrow and sends gas money to one new wallet per stage peer (their keys in 0600 files)."""
    from swarm.apps.demo.economy import PEER_GAS_WEI, DemoEconomy
    from swarm.apps.demo.run import main as demo_main

    key = tmp_path / "researcher.key"
    create_key_file(key, chain.accounts[0].private_key)
    out, standin = tmp_path / "deployment.json", tmp_path / "standin.json"
    base = ["deploy", "--rpc", chain.rpc_url, "--key-file", str(key), "--chain-id", str(chain.chain_id)]
    assert main([*base, "--out", str(out)]) == 0
    assert main([*base, "--out", str(standin), "--verifier", "StandInChunkVerifier"]) == 0
    dep = Deployment.load(out)

    def economy(file: Path) -> DemoEconomy:
        return DemoEconomy(tmp_path / f"run-{file.stem}", workload="digits", n_stages=1, stage_peers=2,
                           round_duration=10, prover_backend="zokrates", deployment=file, funder_key_file=key)  # fmt: skip

    with economy(out) as e:
        d = e.deployment
        assert d is not None and (d.escrow, d.verifier, d.chain_id) == (dep.escrow, dep.verifier, chain.chain_id)
        client = ChainClient(chain.rpc_url, escrow=dep.escrow)
        assert client.experiment(d.experiment_id).verifier == dep.verifier
        dev = {a.address for a in chain.accounts}
        assert len(d.peers) == 2 and not dev & set(d.peers)  # new wallets, not the dev chain's accounts
        for peer, key_file in zip(d.peers, e.key_files, strict=True):
            assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
            assert Wallet.load(key_file).address == peer
            assert client.stake_of(peer).active == DemoConfig().stake
            assert 0 < client.eth_balance(peer) < PEER_GAS_WEI  # its gas money, less what staking cost
        args = e.peer_args(0)
        assert args[args.index("--escrow") + 1] == dep.escrow and args[args.index("--chain-rpc") + 1] == chain.rpc_url
        assert e.first_block > 0 and e.summary_lines()[0].startswith("chain: 0 proven contributions")
    with pytest.raises(ChainError, match="does not check proofs"):  # peers could never be paid there
        economy(standin).__enter__()

    assert demo_main(["--deployment", str(tmp_path / "missing.json")]) == 2
    assert "cannot read the deployment file" in capsys.readouterr().err
    assert demo_main(["--no-chain", "--deployment", str(out)]) == 2
    assert "--deployment needs the chain" in capsys.readouterr().err
