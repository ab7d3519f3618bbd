"""The embedded dev chain: anvil starts on a free port with funded accounts, never outlives its owner."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from swarm.chain import DevChain, DevChainError
from swarm.chain.build import artifacts_up_to_date, load_artifacts

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


def test_devchain_serves_optimism_rpc_with_funded_accounts_and_stops() -> None:
    with DevChain(accounts=3) as chain:
        pid = chain.pid
        assert chain.rpc_url.startswith("http://127.0.0.1:")
        assert int(chain.rpc("eth_chainId", []), 16) == 31337
        assert len(chain.accounts) == 3
        balance = int(chain.rpc("eth_getBalance", [chain.accounts[2].address, "latest"]), 16)
        assert balance == 10_000 * 10**18
        assert "0x" not in repr(chain.accounts[0].private_key)  # the key hides in repr
        before = chain.latest_timestamp()
        chain.increase_time(3600)
        assert chain.latest_timestamp() >= before + 3600
    assert not _alive(pid)
    with pytest.raises(DevChainError, match="not running"):
        _ = chain.rpc_url


def test_devchain_stops_when_the_with_block_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"), DevChain(accounts=1) as chain:
        pid = chain.pid
        raise RuntimeError("boom")
    assert not _alive(pid)


def test_two_devchains_get_different_ports() -> None:
    with DevChain(accounts=1) as a, DevChain(accounts=1) as b:
        assert a.rpc_url != b.rpc_url


def test_anvil_dies_when_its_parent_is_killed() -> None:
    code = (
        "import os; from swarm.chain import DevChain; c = DevChain(accounts=1).start(); "
        "print(c.pid, flush=True); os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    pid = int(proc.stdout.strip())
    for _ in range(100):  # the kernel delivers PDEATHSIG asynchronously
        if not _alive(pid):
            break
        time.sleep(0.05)
    assert not _alive(pid)


def test_committed_artifacts_match_the_sources() -> None:
    assert artifacts_up_to_date(), "run `node contracts/build.mjs` and commit contracts/artifacts/"
    assert "StandInChunkVerifier" in load_artifacts()


def test_devchain_reports_a_bad_anvil_flag_clearly() -> None:
    with pytest.raises(DevChainError, match="anvil exited"):
        DevChain(accounts=1, extra_args=["--no-such-flag"]).start()
    assert not [p for p in psutil.Process().children(recursive=True) if p.name() == "anvil"]
