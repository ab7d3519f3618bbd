"""The ZoKrates worker process: survives bad requests, times out cleanly, dies with its parent; `python -m zk setup`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from runtime import procs
from zk.chunk_prover import ChunkProver
from zk.circuit import CircuitParams
from zk.keys import has_keys, keys_dir
from zk.prover import ProofError, ZkWorker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_worker_answers_bad_requests_with_errors_and_keeps_serving(tmp_path):
    with ZkWorker(timeout=60) as w:
        with pytest.raises(ProofError, match="unknown op"):
            w.request("fly")
        with pytest.raises(ProofError, match="needs `dir`"):
            w.request("prove", args=[])
        with pytest.raises(ProofError, match="compile"):
            w.request("compile", source="def main( {", dir=str(tmp_path / "bad"))
        with pytest.raises(ProofError, match="no such file|ENOENT"):
            w.request("prove", dir="/nonexistent/keys", args=[])
        w._proc.stdin.write(b"this is not json\n")  # a raw malformed line: answered, not fatal
        w._proc.stdin.flush()
        assert w._answers.get(timeout=30)["ok"] is False
        assert w.request("ping")["pid"] == w.pid
        assert w.alive


def test_a_request_that_times_out_stops_the_worker_with_a_clear_error():
    w = ZkWorker().start()
    try:
        pid = w.pid
        with pytest.raises(ProofError, match="did not answer"):
            w.request("constants", timeout=0.001)
        assert not w.alive and _wait_gone(pid, 10)
        with pytest.raises(ProofError, match="not running"):
            w.request("ping")
    finally:
        w.shutdown()


def test_worker_exits_when_its_stdin_closes():
    w = ZkWorker().start()
    pid, proc = w.pid, w._proc
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0
    w.shutdown()
    assert _wait_gone(pid, 1)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_parent_leaves_no_node_process(sig):
    code = ("import sys, time; from zk.prover import ZkWorker; w = ZkWorker().start(); "
            "print(w.pid, flush=True); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        node_pid = int(parent.stdout.readline())
        assert psutil.Process(node_pid).name() == "node"
        os.kill(parent.pid, sig)
        parent.wait(timeout=10)
        assert _wait_gone(node_pid, 10), "the node worker outlived its parent"
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
        parent.stdout.close()


def test_setup_cli_writes_keys_and_a_renamed_verifier(tmp_path):
    params = CircuitParams(chunk=64, block=64, depth=2)
    verifier = tmp_path / "ChunkVerifier.sol"
    argv = [sys.executable, "-m", "zk", "setup", "--chunk", "64", "--block", "64", "--depth", "2",
            "--keys", str(tmp_path / "keys"), "--verifier", str(verifier)]
    done = procs.run(argv, capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == 0, done.stderr
    assert has_keys(params, tmp_path / "keys")
    assert json.loads((keys_dir(params, tmp_path / "keys") / "params.json").read_text())["depth"] == 2
    sol = " ".join(verifier.read_text().replace("(", "( ").replace(")", " )").split())
    assert "contract ChunkVerifier" in sol and "contract Verifier " not in sol
    assert "function verifyTx( Proof memory proof, uint[4] memory input ) public view returns ( bool" in sol
    assert "development" in done.stderr
    bad = subprocess.run([*argv[:4], "--chunk", "100"], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1 and "divide" in bad.stderr and "Traceback" not in bad.stderr


def test_prover_without_keys_says_to_run_setup(tmp_path):
    with ZkWorker() as w, pytest.raises(ProofError, match="python -m zk setup"):
        ChunkProver(w, CircuitParams(chunk=64, block=64, depth=2), tmp_path, setup=False)
