"""The stage role: serve and average a stage (`StagePeer`); a paid peer also proves and claims every round."""

from __future__ import annotations

import logging
from contextlib import ExitStack

from swarm.apps.config import ConfigError, PeerConfig
from swarm.apps.events import EventWriter, Left

logger = logging.getLogger("swarm.peer")


def run_stage(config, dht, record, workload, events: EventWriter, stop, deadline, wallet) -> None:
    from swarm.apps.stage_peer import StagePeer, load_hook

    try:
        hooks = [load_hook(spec) for spec in config.round_hooks]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    with ExitStack() as cleanup:  # settler first, gossip relay after it: stopped in reverse order
        settler = round_settler(config, record, events, dht, cleanup)
        if settler is not None:
            hooks.append(settler)
        peer = StagePeer(config, dht, record, workload, events, wallet=wallet, hooks=hooks)
        peer.run(stop, deadline)
    events.emit(Left(reason="stopped" if stop.is_set() else "duration"))


def round_settler(config: PeerConfig, record, events: EventWriter, dht, cleanup: ExitStack):
    """The round hook that proves and contributes each round on-chain, or None when the peer is not paid."""
    if config.chain_rpc is None or record.chain_experiment_id is None:
        return None
    if config.wallet_key_file is None and config.wallet_key is None:
        logger.warning("no wallet: this peer trains but is not paid (give --wallet-key-file to be paid)")
        return None
    from swarm.apps.events import Settled
    from swarm.chain.client import ChainClient
    from swarm.chain.wallet import Wallet
    from swarm.settlement.settler import RoundSettler

    wallet = Wallet.from_file(config.wallet_key_file) if config.wallet_key_file else Wallet(config.wallet_key)
    client = ChainClient(config.chain_rpc, wallet, escrow=config.escrow)

    def on_event(e) -> None:
        events.emit(Settled(action=e.kind, round=e.round, stage=e.stage, detail=e.detail))

    publish = None
    try:  # contributions and audit answers also go out on GossipSub (swarm/gossip), best effort
        from swarm.network.gossip.relay import GossipRelay

        relay = cleanup.enter_context(GossipRelay(dht, record.name))
        publish = relay.publish_contribution
    except Exception as exc:  # noqa: BLE001 -- gossip is optional; settlement works without it
        logger.warning("gossip unavailable, contributions go on-chain only: %s", exc)
    settler = RoundSettler(client, record.chain_experiment_id, on_event=on_event,
                           publish=lambda c, audit: publish and publish(c, audit=audit))
    return cleanup.enter_context(settler)


def wallet_address(config: PeerConfig) -> str | None:
    """The L2 address of the wallet (its key stays in this process, never logged); None without a wallet."""
    if config.wallet_key_file is None and config.wallet_key is None:
        return None
    from swarm.chain.wallet import Wallet, WalletError

    try:
        if config.wallet_key_file is not None:
            return Wallet.from_file(config.wallet_key_file).address
        return Wallet(config.wallet_key).address
    except WalletError as exc:
        raise ConfigError(str(exc)) from None
