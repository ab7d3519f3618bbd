"""PeerConfig: flags > env SWARM_* > profile > defaults, and a clear error for every bad setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swarm.apps.config import ConfigError, load_config

PEER = "/ip4/127.0.0.1/tcp/4001/p2p/QmSoLnSGccFuZQJzRadHn95W2CrSFmZuTdDWP8HXaHca9z"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SWARM_") and key != "SWARM_TEST_SESSION":
            monkeypatch.delenv(key)


def test_defaults_make_a_bootstrap_peer_valid():
    config = load_config({"role": "bootstrap"})
    assert (config.role, config.workload, config.n_stages, config.initial_peers) == ("bootstrap", "digits", 2, [])


def test_flags_beat_env_which_beats_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    profile = tmp_path / "p.toml"
    profile.write_text('[peer]\nrole = "trainer"\nbatch_size = 8\nlr = 0.5\nconcurrency = 3\n')
    monkeypatch.setenv("SWARM_BATCH_SIZE", "16")
    monkeypatch.setenv("SWARM_LR", "0.25")
    monkeypatch.setenv("SWARM_INITIAL_PEERS", f"{PEER} {PEER}")
    config = load_config({"lr": 0.125}, profile)
    assert config.role == "trainer"  # profile only
    assert config.concurrency == 3  # profile only
    assert config.batch_size == 16  # env beats profile
    assert config.lr == 0.125  # flag beats env
    assert config.initial_peers == [PEER, PEER]  # env list, space separated


def test_profile_with_top_level_keys_works(tmp_path: Path):
    profile = tmp_path / "p.toml"
    profile.write_text('role = "bootstrap"\nn_stages = 4\n')
    assert load_config({}, profile).n_stages == 4


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"role": "stage"}, "a stage peer joins an existing swarm"),
        ({"role": "trainer"}, "a trainer peer joins an existing swarm"),
        ({"role": "bootstrap", "join": True}, "--join needs --initial-peers"),
        ({"role": "bootstrap", "initial_peers": ["10.0.0.1:4001"]}, "'10.0.0.1:4001' is not a peer multiaddr"),
        ({"role": "bootstrap", "n_stages": 0}, "--n-stages / SWARM_N_STAGES"),
        ({"role": "bootstrap", "port": 70000}, "--port / SWARM_PORT"),
        ({"role": "bootstrap", "workload": "imagenet"}, "--workload / SWARM_WORKLOAD"),
        ({"role": "bootstrap", "experiment": "a b"}, "--experiment / SWARM_EXPERIMENT"),
        ({"role": "bootstrap", "round_hooks": ["nohook"]}, "must be 'package.module:function'"),
        ({"role": "bootstrap", "colour": "red"}, "--colour / SWARM_COLOUR: unknown setting"),
    ],
)
def test_bad_settings_are_one_clear_error(flags: dict, message: str):
    with pytest.raises(ConfigError, match="invalid configuration") as err:
        load_config(flags)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_or_broken_profile_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({}, tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("role = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config({}, broken)


def test_wallet_key_never_comes_from_flags_or_profiles(tmp_path: Path):
    with pytest.raises(ConfigError, match="never passed as a flag"):
        load_config({"role": "bootstrap", "wallet_key": "0x" + "11" * 32})
    profile = tmp_path / "p.toml"
    profile.write_text(f'wallet_key = "0x{"11" * 32}"\n')
    with pytest.raises(ConfigError, match="keep keys out of profiles"):
        load_config({"role": "bootstrap"}, profile)


def test_wallet_key_from_env_is_secret(monkeypatch: pytest.MonkeyPatch):
    key = "0x" + "ab" * 32
    monkeypatch.setenv("SWARM_WALLET_KEY", key)
    config = load_config({"role": "bootstrap"})
    assert key not in repr(config) and key not in str(config.model_dump())
    assert config.wallet_key.get_secret_value() == key


def test_key_file_and_env_key_together_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SWARM_WALLET_KEY", "0x" + "ab" * 32)
    with pytest.raises(ConfigError, match="not both"):
        load_config({"role": "bootstrap", "wallet_key_file": tmp_path / "k"})


@pytest.mark.parametrize("profile", sorted((Path(__file__).parents[2] / "peers").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_profile_is_valid(profile: Path):
    config = load_config({"initial_peers": [PEER]}, profile)
    assert config.wallet_key is None and config.wallet_key_file is None


def test_every_setting_is_a_flag_with_help():
    from swarm.apps.config import PeerConfig
    from swarm.apps.peer import build_parser

    actions = {a.dest: a for a in build_parser()._actions}
    for name, field in PeerConfig.model_fields.items():
        if name == "wallet_key":  # never a flag: argv is visible to every user of the machine
            assert name not in actions
            continue
        assert name in actions, f"setting {name} has no flag"
        assert (actions[name].help or "").strip(), f"--{name.replace('_', '-')} has no --help text"
        assert field.description, f"setting {name} has no description"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--optimizer", "lion"], "argument --optimizer: invalid choice: 'lion' (choose from 'adam', 'adam8bit', 'sgd')"),
        (["--relay", "maybe"], "argument --relay: invalid choice: 'maybe' (choose from 'auto', 'serve', 'off')"),
        (["--memory-limit", "lots"], "argument --memory-limit: invalid float value: 'lots'"),
    ],
)
def test_a_bad_flag_value_names_the_flag_and_the_allowed_values(argv: list[str], message: str):
    from swarm.apps.peer import UsageError, parse_config

    with pytest.raises(UsageError) as err:
        parse_config(["--role", "bootstrap", *argv])
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("SWARM_OPTIMIZER", "lion", "--optimizer / SWARM_OPTIMIZER: Input should be 'adam', 'adam8bit' or 'sgd'"),
        ("SWARM_RELAY", "maybe", "--relay / SWARM_RELAY: Input should be 'auto', 'serve' or 'off'"),
        ("SWARM_DEVICE", "tpu", "--device / SWARM_DEVICE: unknown device 'tpu': use auto, cpu, cuda or cuda:N"),
        ("SWARM_MEMORY_LIMIT", "0", "--memory-limit / SWARM_MEMORY_LIMIT: Input should be greater than 0"),
    ],
)
def test_a_bad_value_from_the_environment_names_the_setting_and_the_allowed_values(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str
):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        load_config({"role": "bootstrap"})
    assert message in str(err.value)


def test_the_new_flags_reach_the_config(tmp_path: Path):
    from swarm.apps.peer import parse_config

    ckpt = tmp_path / "round-000009"
    ckpt.mkdir()
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        parse_config(["--role", "bootstrap", "--resume-from", str(ckpt)])
    (ckpt / "manifest.json").write_text("{}")
    config = parse_config(["--role", "bootstrap", "--optimizer", "adam8bit", "--relay", "serve", "--memory-limit",
                           "0.5", "--device", "auto", "--resume-from", str(ckpt)])  # fmt: skip
    assert (config.optimizer, config.relay, config.memory_limit, config.device, config.resume_from) == (
        "adam8bit", "serve", 0.5, "auto", ckpt)
    assert load_config({"role": "bootstrap", "device": "cuda:1"}).device == "cuda:1"
