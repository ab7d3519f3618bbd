"""The stage role: serve and average a stage (`StagePeer`); a paid peer also proves and claims every round, and
watches the experiment's audits (swarm/settlement/watcher.py)."""

from __future__ import annotations

import logging
from contextlib import ExitStack

from swarm.apps.config import ConfigError, PeerConfig
from swarm.apps.events import EventWriter, Left, Settled

logger = logging.getLogger("swarm.peer")


def run_stage(config: PeerConfig, dht, record, workload, events: EventWriter, stop, deadline, wallet) -> None:
    """Serve a stage until `stop` or `deadline`; with a wallet and a chain experiment, also prove and claim."""
    from swarm.apps.stage_peer import StagePeer, load_hook

    try:
        hooks = [load_hook(spec) for spec in config.round_hooks]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    check_device(config.device)
    with ExitStack() as cleanup:
        evidence: list = []  # where the peer's accusations go besides its group (GossipSub, for a paid peer)
        settler = paid_stack(config, record, wallet, events, dht, cleanup, evidence)
        if settler is not None:
            hooks.append(settler)
        address = wallet.address if wallet is not None else None
        if silent(config):  # a settlement attack: the peer averages honestly (no averaging attack named "silent")
            config = config.model_copy(update={"byzantine": False})
        peer = StagePeer(config, dht, record, workload, events, wallet=address, hooks=hooks)
        peer.evidence_sinks += evidence
        if settler is not None:  # our wallet signs our parts' leaves: a lie in them is slashable (slashMismatch)
            peer.part_signer = part_signer(settler.client, wallet, record.chain_experiment_id)
        peer.run(stop, deadline)
    events.emit(Left(reason="stopped" if stop.is_set() else "duration"))


def paid_stack(config: PeerConfig, record, wallet, events: EventWriter, dht, cleanup: ExitStack,
               evidence: list | None = None):
    """The round hook that proves, contributes and claims each round on-chain, or None when the peer is not paid.

    The gossip relay is started first and the settler and the watcher after it, so `cleanup` stops them in reverse
    order: the settler's last publications still find the relay open.
    """
    if config.chain_rpc is None or record.chain_experiment_id is None:
        return None
    if wallet is None:
        logger.warning("no wallet: this peer trains but is not paid (give --wallet-key-file to be paid)")
        return None
    from swarm.chain.client import ChainClient
    from swarm.settlement.journal import default_data_dir
    from swarm.settlement.settler import RoundSettler
    from swarm.settlement.watcher import Watcher

    client = ChainClient(config.chain_rpc, wallet, escrow=config.escrow)
    check_paid_experiment(client, record.chain_experiment_id, config)  # refuses (exit 5) before any transaction

    def on_event(e) -> None:
        events.emit(Settled(action=e.kind, round=e.round, stage=e.stage, detail=e.detail))

    publish, relay = None, None
    try:  # contributions and audit answers also go out on GossipSub (swarm/network/gossip), best effort
        from swarm.network.gossip.relay import GossipRelay

        relay = cleanup.enter_context(GossipRelay(dht, record.name, host=config.host))
        publish = relay.publish_contribution
        if evidence is not None:
            evidence.append(relay.publish_evidence)
    except Exception as exc:  # noqa: BLE001 -- gossip is optional; settlement works without it
        logger.warning("gossip unavailable, contributions go on-chain only: %s", exc)
    prover = None
    if config.prover_backend != "zokrates" or config.strict_proofs:
        from zk.background import BackgroundProver

        prover = BackgroundProver(workers=config.prover_workers, backend=config.prover_backend,
                                  key_dir=config.prover_key_dir, strict=config.strict_proofs)
    if silent(config):
        logger.warning("--byzantine --attack silent: this peer will not prove nor answer its audits (tests only)")
    settler = RoundSettler(client, record.chain_experiment_id, on_event=on_event, prover_workers=config.prover_workers,
                           prover=prover, publish=lambda c, audit: publish and publish(c, audit=audit),
                           answer_audits=not silent(config), data_dir=config.data_dir or default_data_dir(),
                           batches=relay is not None)  # fmt: skip
    settler = cleanup.enter_context(settler)
    if relay is not None:  # the round's contributions heard on gossip: batched by whoever's duty it is
        relay.listeners.append(settler.on_gossip)
    if relay is not None and client.experiment(record.chain_experiment_id).require_certificate:  # pays certified
        from swarm.settlement.certificate import Certifier  # records only: we sign our groups' certificates

        settler.certifier = Certifier(client, record.chain_experiment_id, publish=relay.publish_certificate,
                                      journal=settler.journal, from_block=settler.start_block)  # fmt: skip
        relay.listeners.append(settler.certifier.on_gossip_message)
    # every paid peer also watches the experiment's audits (its own client: its transactions never wait on the
    # settler's; nonces are shared through the wallet's lock)
    watcher = cleanup.enter_context(Watcher(settler.journal_also(client.with_wallet(wallet)), record.chain_experiment_id,
                                            on_event=on_event))  # its transactions in the settler's journal too
    if relay is not None:
        relay.listeners.append(watcher.on_gossip)
    if evidence is not None:  # our accusations: a signed part that lies is sent to slashMismatch (docs/protocol.md)
        evidence.append(watcher.on_accusation)
    return settler


def part_signer(client, wallet, experiment_id: int):
    """The WalletSigner of a paid peer's parts: its wallet (in memory only), this chain, escrow and experiment."""
    from swarm.rounds.parts import EvidenceDomain, WalletSigner

    domain = EvidenceDomain(chain_id=client.chain_id(), escrow=client.escrow.address, experiment_id=experiment_id)
    return WalletSigner(wallet.account, domain)


def silent(config: PeerConfig) -> bool:
    """`--byzantine --attack silent`: a paid peer that never proves nor answers its audits (tests and demos)."""
    return config.byzantine and config.attack == "silent"


def check_paid_experiment(client, experiment_id: int, config: PeerConfig) -> None:
    """Refuse an experiment this peer cannot serve safely (`swarm.chain.safety.check_experiment`): a verifier that
    is not one of ours (the committed ones, or the one made for `--prover-key-dir`), windows too short for its
    prover, too many chunks. Raises UnsafeExperiment (exit 5) before any transaction."""
    from swarm.chain.safety import check_experiment, key_dir_code_hashes

    extra = key_dir_code_hashes(config.prover_key_dir) if config.prover_key_dir is not None else {}
    state = check_experiment(client, experiment_id, prover_workers=config.prover_workers, extra_code_hashes=extra)
    logger.info("experiment %d passed the peer's safety checks (verifier %s, windows %d/%d s)", experiment_id,
                state.verifier, state.submit_window, state.audit_window)


def load_wallet(config: PeerConfig):
    """The peer's L2 `Wallet` (its key stays in this process, never logged), or None without one."""
    if config.wallet_key_file is None and config.wallet_key is None:
        return None
    from swarm.chain.wallet import Wallet, WalletError

    try:
        if config.wallet_key_file is not None:
            return Wallet.from_file(config.wallet_key_file)
        return Wallet(config.wallet_key)
    except WalletError as exc:
        raise ConfigError(str(exc)) from None


def check_device(device: str) -> None:
    """A stage on a GPU that this machine does not have is a setting to fix, not a crash halfway through joining."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: this machine has no CUDA GPU that torch can use (try --device cpu)")
    if device.startswith("cuda:") and int(device.split(":")[1]) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: this machine has no Apple GPU that torch can use (try --device cpu)")
