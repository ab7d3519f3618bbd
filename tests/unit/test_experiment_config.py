"""swarm-experiment's file and command line: every config error names its field and range; every usage error is
one line and exit code 2; the example file is valid and every field is documented in --help."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swarm.apps.experiment.cli import EPILOG, main
from swarm.apps.experiment.config import (
    ExperimentConfig,
    ExperimentConfigError,
    describe_fields,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parents[2]


def test_example_file_is_valid_and_every_field_is_documented():
    cfg = load_config(REPO / "experiments" / "experiment.toml")
    assert cfg.experiment.name == "digits-demo" and cfg.local.stage_peers >= cfg.experiment.n_stages
    text = (REPO / "experiments" / "experiment.toml").read_text()
    for section, info in ExperimentConfig.model_fields.items():
        assert f"[{section}]" in text
        for name, field in info.annotation.model_fields.items():
            assert field.description, f"{section}.{name} has no description"
            assert name in text, f"{section}.{name} is not in the example file"
            assert f"  {name} = " in describe_fields() and f"  {name} = " in EPILOG


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"experiment": {"n_stages": 0}}, "[experiment] n_stages: Input should be greater than or equal to 1 (allowed: >= 1 and <= 16; got 0)"),
        ({"experiment": {"n_stages": 17}}, "[experiment] n_stages"),
        ({"experiment": {"workload": "gpt5"}}, "[experiment] workload: Input should be 'digits' or 'tinylm'"),
        ({"experiment": {"name": "has space"}}, "[experiment] name: String should match pattern"),
        ({"experiment": {"round_duration": 1}}, "[experiment] round_duration: Input should be greater than or equal to 2 (allowed: >= 2 and <= 3600; got 1)"),
        ({"experiment": {"round_duration": 2.5}}, "[experiment] round_duration"),
        ({"experiment": {"lr": 0}}, "[experiment] lr: Input should be greater than 0 (allowed: > 0 and <= 1.0; got 0)"),
        ({"experiment": {"lr_schedule": "cosine"}}, "[experiment] lr_schedule: Input should be 'constant'"),
        ({"experiment": {"outer_optimizer": "adam"}}, "[experiment] outer_optimizer: Input should be 'sgd' or 'nesterov'"),
        ({"experiment": {"aggregation": "median"}}, "[experiment] aggregation: Input should be 'mean' or 'centered_clip'"),
        ({"experiment": {"batch_size": 0}}, "[experiment] batch_size"),
        ({"experiment": {"seed": -1}}, "[experiment] seed"),
        ({"experiment": {"typo": 1}}, "[experiment] typo: unknown field (allowed: name, workload"),
        ({"economy": {"chain": "mainnet"}}, "[economy] chain: Input should be 'embedded', 'rpc' or 'none'"),
        ({"economy": {"reward_per_round": -1}}, "[economy] reward_per_round: Input should be greater than or equal to 0"),
        ({"economy": {"pool": 0}}, "[economy] pool: Input should be greater than 0 (allowed: > 0"),
        ({"economy": {"pool": 5, "reward_per_round": 10}}, "pool: must hold at least one round's reward"),
        ({"economy": {"norm_bound": 0}}, "[economy] norm_bound"),
        ({"economy": {"audits_per_peer": 9}}, "[economy] audits_per_peer: Input should be less than or equal to 8 (allowed: >= 1 and <= 8; got 9)"),
        ({"economy": {"chunk_size": 8}}, "[economy] chunk_size"),
        ({"economy": {"submit_window": 0}}, "[economy] submit_window"),
        ({"economy": {"audit_window": 0}}, "[economy] audit_window"),
        ({"economy": {"num_rounds": 0}}, "[economy] num_rounds"),
        ({"economy": {"verifier": "mine"}}, "[economy] verifier"),
        ({"economy": {"escrow": "0x1234"}}, "[economy] escrow: String should match pattern"),
        ({"economy": {"escrow": "0x" + "a" * 40}}, "escrow: only with chain = 'rpc'"),
        ({"checkpoints": {"every_rounds": 0}}, "[checkpoints] every_rounds"),
        ({"monitor": {"port": 70000}}, "[monitor] port: Input should be less than or equal to 65535"),
        ({"monitor": {"poll_seconds": 0.01}}, "[monitor] poll_seconds"),
        ({"local": {"stage_peers": 1}}, "local.stage_peers: 1 peers cannot serve 2 stages (allowed: 0 or >= 2)"),
        ({"local": {"trainers": 99}}, "[local] trainers"),
        ({"chain": {}}, "[chain]: unknown section (allowed: experiment, economy, checkpoints, monitor, local)"),
    ],
)
def test_every_wrong_value_names_its_field_and_range(data, expected):
    with pytest.raises(ExperimentConfigError) as err:
        parse_config(data, "exp.toml")
    assert str(err.value).startswith("exp.toml: ")
    assert expected in str(err.value)


def test_several_errors_are_all_reported():
    with pytest.raises(ExperimentConfigError) as err:
        parse_config({"experiment": {"n_stages": 0, "lr": -1}, "monitor": {"port": -1}})
    text = str(err.value)
    assert "n_stages" in text and "lr" in text and "port" in text


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ExperimentConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[experiment\nname = 1")
    with pytest.raises(ExperimentConfigError, match="not valid TOML"):
        load_config(bad)


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_cli_usage_errors_are_one_line_and_exit_2(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "exp.toml"
    good.write_text('[experiment]\nname = "t"\n')
    code, out = _run(capsys, "launch", str(tmp_path / "missing.toml"))
    assert code == 2 and "no such file" in out
    code, out = _run(capsys, "launch", str(good), "--key", "0xabc")
    assert code == 2 and "never given on the command line" in out and "0xabc" not in out
    code, out = _run(capsys, "launch", str(good), "--chain-rpc", "http://127.0.0.1:1")
    assert code == 2 and "--key-file" in out
    key = tmp_path / "k.key"
    key.write_text("0x" + "11" * 32)
    os.chmod(key, 0o644)
    code, out = _run(capsys, "launch", str(good), "--chain-rpc", "http://127.0.0.1:1", "--key-file", str(key))
    assert code == 2 and "readable by others" in out and "11" * 32 not in out
    code, out = _run(capsys, "launch", str(good), "--resume-from", str(tmp_path))
    assert code == 2 and "not a complete checkpoint" in out
    code, out = _run(capsys, "launch")
    assert code == 2 and "file" in out
    code, out = _run(capsys, "frobnicate")
    assert code == 2 and "invalid choice" in out


@pytest.mark.parametrize("command", ["status", "stop", "results", "export"])
def test_subcommands_without_an_experiment_exit_3(tmp_path: Path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    code, out = _run(capsys, command, "--state-dir", str(tmp_path / "none"))
    assert code == 3 and "no experiment was launched" in out
    code, out = _run(capsys, command)
    assert code == 3 and "which experiment?" in out


def test_help_tells_everything(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for word in ("launch", "status", "stop", "results", "export", "--chain-rpc", "[economy]", "reward_per_round",
                 "every_rounds", "key is never a flag"):
        assert word in text
    for sub in ("launch", "status", "stop", "results", "export"):
        with pytest.raises(SystemExit):
            main([sub, "--help"])
        assert "--state-dir" in capsys.readouterr().out
