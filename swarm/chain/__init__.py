"""The chain layer: the embedded dev chain (anvil), the solc-js contract build and the escrow client."""

from swarm.chain.devchain import DevAccount, DevChain
from swarm.chain.errors import BuildError, ChainError, DevChainError, RevertError

__all__ = ["BuildError", "ChainError", "DevAccount", "DevChain", "DevChainError", "RevertError"]
