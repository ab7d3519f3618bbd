"""The cheating modes a stage peer can be told to run (`--byzantine --attack NAME`; tests, demos, experiments).

One list for the averager (swarm/rounds/verified.py), the peer's config and CLI (swarm/apps/config.py, peer.py) and
swarm-demo (swarm/apps/demo/run.py). No heavy imports: the CLI reads it before torch is loaded.
"""

from __future__ import annotations

from typing import Literal, get_args

AveragingAttack = Literal["poison", "scale", "random", "stale", "norm", "withhold", "noise", "split"]
PeerAttack = Literal[AveragingAttack, "silent"]  # "silent" is the settler's: the peer averages honestly
AVERAGING_ATTACKS: tuple[str, ...] = get_args(AveragingAttack)
ATTACKS: tuple[str, ...] = get_args(PeerAttack)

ATTACK_HELP = {
    "poison": "commit the honest update, send its scales x1000 (caught: data != root; accused, slashed)",
    "random": "send random codes (caught like poison)",
    "norm": "commit and send an update far above the norm bound (dropped from the record)",
    "stale": "replay the previous round's commitment and data (dropped as a replay)",
    "scale": "commit and send -9x the honest update: passes every check; only --aggregation centered_clip limits it",
    "withhold": "a free rider that commits and proves its update but never sends its parts (dropped, not certified)",
    "noise": "a free rider that commits, sends and proves a random update of its honest update's norm: passes "
             "every check of the data; dropped (so not certified nor paid) by the alignment rule",
    "split": "send the committed data to every peer but the first that asks, random codes to that one, 1 s late "
             "(caught by it; every honest peer drops it from the accusation it lists by the exchange deadline)",
    "silent": "a paid peer that averages honestly but never proves nor answers its audits (the watchers slash it)",
}
assert set(ATTACK_HELP) == set(ATTACKS)


def attacks_help() -> str:
    """One line describing every attack, for --help texts."""
    return "; ".join(f"{name}: {text}" for name, text in ATTACK_HELP.items())
