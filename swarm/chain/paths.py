"""Where the chain layer finds its Node parts (node_modules) and its Solidity sources and artifacts."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = PROJECT_ROOT / "node_modules"
CONTRACTS_DIR = PROJECT_ROOT / "contracts"
ARTIFACTS_DIR = CONTRACTS_DIR / "artifacts"
ANVIL_BINARY = NODE_MODULES / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
ANVIL_WRAPPER = NODE_MODULES / "@foundry-rs" / "anvil" / "bin.mjs"
