"""swarm-experiment's `[economy] require_certificate` reaches the experiment it creates (issue 13)."""

from __future__ import annotations

from pathlib import Path

from swarm.apps.experiment.config import ExperimentConfig
from swarm.apps.experiment.supervisor import Economy


def test_require_certificate_reaches_the_deployed_experiment_config(tmp_path: Path) -> None:
    for wanted in (False, True):
        cfg = ExperimentConfig.model_validate({"economy": {"require_certificate": wanted}})
        assert Economy(cfg, tmp_path, None, None)._demo_config((3_000,)).require_certificate is wanted
    assert ExperimentConfig.model_validate({}).economy.require_certificate is False  # off unless asked
