"""swarm-peer's command line: every mistake is one clear line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import os
import signal
import threading

import pytest

import swarm.apps.peer
from swarm.apps.events import parse_event
from swarm.apps.peer import EXIT_CONFIG, EXIT_FORCED, EXIT_JOIN, EXIT_LOST, main, parse_config
from swarm.apps.roles import trainer as trainer_role
from swarm.errors import JoinError, LostSwarmError
from swarm.pipeline.routing import RoutingError

PEER = "/ip4/127.0.0.1/tcp/4001/p2p/QmSoLnSGccFuZQJzRadHn95W2CrSFmZuTdDWP8HXaHca9z"
KEY = "0x" + "5e" * 32


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SWARM_") and key != "SWARM_TEST_SESSION":
            monkeypatch.delenv(key)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--join"], "give --join --initial-peers <multiaddr>"),
        ([], "a stage peer joins an existing swarm"),
        (["--role", "trainer"], "a trainer peer joins an existing swarm"),
        (["--join", "--initial-peers", "127.0.0.1:4001"], "is not a peer multiaddr"),
        (["--role", "miner"], "argument --role: invalid choice: 'miner'"),
        (["--role", "bootstrap", "--n-stages", "two"], "argument --n-stages: invalid int value: 'two'"),
        (["--role", "bootstrap", "--round-duration", "-1"], "--round-duration / SWARM_ROUND_DURATION"),
        (["--role", "bootstrap", "--profile", "/nonexistent.toml"], "profile /nonexistent.toml does not exist"),
        (["--role", "bootstrap", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--join", "--initial-peers"], "expected at least one argument"),
    ],
)
def test_argument_errors_are_one_line_and_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture):
    assert main(argv) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert err.startswith("swarm-peer: ") and err.count("\n") == 2  # the problem, then where to get help


@pytest.mark.parametrize("flag", ["--wallet-key", "--private-key", "--wallet-key=" + KEY])
def test_a_wallet_key_flag_is_refused_without_echoing_the_key(flag: str, capsys: pytest.CaptureFixture):
    argv = ["--role", "bootstrap", *flag.split("=", 1)[:1], KEY] if "=" not in flag else ["--role", "bootstrap", flag]
    assert main(argv) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "--wallet-key-file" in err and "SWARM_WALLET_KEY" in err
    assert KEY not in err


def test_flags_become_the_config(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SWARM_BATCH_SIZE", "7")
    config = parse_config(
        ["--join", "--role", "trainer", "--initial-peers", PEER, PEER, "--concurrency", "2", "--no-rebalance"]
    )
    assert config.role == "trainer" and config.initial_peers == [PEER, PEER]
    assert (config.concurrency, config.batch_size, config.rebalance) == (2, 7, False)


def test_invalid_wallet_key_is_a_config_error_that_does_not_echo_it(monkeypatch, capsys: pytest.CaptureFixture):
    bad = "0x" + "zz" * 32
    monkeypatch.setenv("SWARM_WALLET_KEY", bad)
    assert main(["--role", "bootstrap"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "not a 32-byte hex private key" in err and bad not in err


def test_wallet_key_file_must_be_0600(tmp_path, capsys: pytest.CaptureFixture):
    from swarm.chain.wallet import create_key_file

    path = tmp_path / "wallet.key"
    create_key_file(path, KEY)
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    assert main(["--role", "bootstrap", "--wallet-key-file", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"chmod 600 {path}" in err and KEY not in err


def test_an_unexpected_error_is_reported_as_an_event_and_exit_1(monkeypatch, capsys: pytest.CaptureFixture):
    def crash(config, events):
        raise RuntimeError("boom")

    monkeypatch.setattr(swarm.apps.peer, "run_peer", crash)
    assert main(["--role", "bootstrap", "--events"]) == 1
    captured = capsys.readouterr()
    assert "swarm-peer: stopped on an unexpected error: RuntimeError: boom" in captured.err
    (event,) = [parse_event(line) for line in captured.out.splitlines()]
    assert event.kind == "failed" and "boom" in event.message


def test_new_settings_are_flags(tmp_path):
    config = parse_config(["--join", "--initial-peers", PEER, "--device", "cuda:1", "--matchmaking-time", "0.5",
                           "--identity-path", str(tmp_path / "id.key"), "--prover-workers", "3", "--seed", "7"])
    assert (config.device, config.matchmaking_time, config.prover_workers, config.seed) == ("cuda:1", 0.5, 3, 7)
    assert config.identity_path == tmp_path / "id.key"
    assert main(["--role", "bootstrap", "--device", "tpu"]) == EXIT_CONFIG


class FlakyTrainer:
    """A Trainer that makes `good` steps, then finds some stage without a reachable peer on every call."""

    def __init__(self, good: int) -> None:
        self.good, self.calls = good, 0

    def run(self, steps, on_step, stop) -> None:
        self.calls += 1
        for _ in range(self.good if self.calls == 1 else 0):
            on_step(object())
        raise RoutingError("no peer serves stage 1")


@pytest.mark.parametrize(("good", "error", "code"), [(3, LostSwarmError, EXIT_LOST), (0, JoinError, EXIT_JOIN)])
def test_a_trainer_that_loses_its_stage_is_lost_not_unable_to_join(monkeypatch, good, error, code):
    monkeypatch.setattr(trainer_role, "TRAINER_RETRY_S", 0.01)
    steps: list[object] = []
    trainer = FlakyTrainer(good)
    with pytest.raises(error) as raised:
        trainer_role.train_until_stopped(trainer, steps.append, threading.Event(), patience=0.2)
    assert len(steps) == good and trainer.calls > 2  # it waited the stage out (retried) before giving up
    assert raised.value.exit_code == code


def test_lost_and_join_errors_map_to_their_exit_codes(monkeypatch, capsys: pytest.CaptureFixture):
    for error, code, text in [(LostSwarmError("stage 1 gone"), EXIT_LOST, "lost the swarm: stage 1 gone"),
                              (JoinError("nobody home"), EXIT_JOIN, "cannot join the swarm: nobody home")]:

        def fail(config, events, error=error):
            raise error

        monkeypatch.setattr(swarm.apps.peer, "run_peer", fail)
        assert main(["--role", "bootstrap"]) == code
        assert f"swarm-peer: {text}" in capsys.readouterr().err


def test_a_second_ctrl_c_forces_out_with_130_not_0(monkeypatch, capsys: pytest.CaptureFixture):
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {sig: signal.getsignal(sig) for sig in signals}
    with swarm.apps.peer._stop_handlers() as stop:
        handler = signal.getsignal(signal.SIGINT)
        assert signal.getsignal(signal.SIGTERM) is handler and signal.getsignal(signal.SIGHUP) is handler
        handler(signal.SIGTERM, None)  # the first: leave cleanly
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)  # the second: force
    # the previous handlers are back: a peer run in-process (here, in pytest) leaves no handler of its own behind
    assert {sig: signal.getsignal(sig) for sig in signals} == saved

    def interrupted(config, events):
        raise KeyboardInterrupt

    monkeypatch.setattr(swarm.apps.peer, "run_peer", interrupted)
    assert main(["--role", "bootstrap"]) == EXIT_FORCED == 130
    assert "forced out" in capsys.readouterr().err


def test_a_gpu_this_machine_lacks_is_a_setting_error():
    import torch

    from swarm.apps.config import ConfigError
    from swarm.apps.roles.stage import check_device

    check_device("cpu")
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU (cuda:0 where there is none)
    with pytest.raises(ConfigError, match=f"--device {missing}"):
        check_device(missing)
