"""`--strict-proofs` / SWARM_STRICT_PROOFS reaches the peer's configuration (zk/background.py's strict mode);
a paid stage peer proves with groth16py unless told otherwise (its dev keys are the committed verifiers')."""

from __future__ import annotations

from swarm.apps.peer import parse_config


def test_strict_proofs_is_off_by_default_and_set_by_flag_or_env(monkeypatch):
    monkeypatch.delenv("SWARM_STRICT_PROOFS", raising=False)
    base = ["--role", "bootstrap"]
    assert parse_config(base).strict_proofs is False
    assert parse_config([*base, "--strict-proofs"]).strict_proofs is True
    monkeypatch.setenv("SWARM_STRICT_PROOFS", "1")  # how swarm-demo's peers get it from the demo's environment
    assert parse_config(base).strict_proofs is True


def test_groth16py_is_the_default_prover_and_zokrates_the_fallback(monkeypatch):
    monkeypatch.delenv("SWARM_PROVER_BACKEND", raising=False)
    base = ["--role", "bootstrap"]
    assert parse_config(base).prover_backend == "groth16py"
    assert parse_config([*base, "--prover-backend", "zokrates"]).prover_backend == "zokrates"
