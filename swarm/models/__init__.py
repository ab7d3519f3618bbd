"""The model zoo: workloads declared once as blocks and cut into pipeline stages (`get_workload(name)`)."""

from __future__ import annotations

from dataclasses import fields

from swarm.models.digits import DigitsConfig, DigitsMLP
from swarm.models.tinylm import TinyLM, TinyLMConfig
from swarm.models.workload import Batch, Workload, WorkloadError, balanced_cut, run_stages

WORKLOADS = {"digits": (DigitsMLP, DigitsConfig), "tinylm": (TinyLM, TinyLMConfig)}

__all__ = [
    "WORKLOADS",
    "Batch",
    "DigitsConfig",
    "DigitsMLP",
    "TinyLM",
    "TinyLMConfig",
    "Workload",
    "WorkloadError",
    "balanced_cut",
    "get_workload",
    "run_stages",
]


def get_workload(name: str, **options: int) -> Workload:
    """The workload called `name` ("digits" or "tinylm"); `options` override fields of its config dataclass."""
    if name not in WORKLOADS:
        raise WorkloadError(f"unknown workload {name!r}: choose one of {', '.join(sorted(WORKLOADS))}")
    cls, config_cls = WORKLOADS[name]
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise WorkloadError(f"workload {name!r} has no option {', '.join(unknown)}; it has {', '.join(sorted(known))}")
    return cls(config_cls(**options))
