"""`swarm-experiment` / `python -m swarm.experiment`: launch, watch and finish an experiment from one file.

Exit codes: 0 done, 1 failed, 2 bad file or flag, 3 no such experiment / not running.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from swarm.apps.experiment.config import ExperimentConfigError, describe_fields, load_config
from swarm.apps.experiment.state import (
    StateError,
    pid_alive,
    read_state,
    stop_supervisor,
    supervisor_alive,
    update_state,
)

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_STATE = 0, 1, 2, 3
LAST = Path("runs") / ".last-experiment"
LAUNCH_TIMEOUT_S = 300.0

EPILOG = f"""\
subcommands:
  launch FILE     validate FILE, deploy or attach the escrow, create and fund the experiment, start the bootstrap
                  peer and the monitor (and the [local] peers) in the background; prints the join command and the
                  dashboard URL. --foreground stays in the terminal (Ctrl-C stops everything).
  status          what runs (processes, peers per stage, round, chain) — from another terminal too
  stop            stop every process of the experiment (and the embedded chain); nothing is left running
  results         report of the run: loss vs samples and wall time against the single-process baseline on the
                  same data, throughput per stage, rewards paid (PNGs + report.md)
  export          the newest complete checkpoint as one model.safetensors + model card (MODEL_CARD.md)

state: every subcommand but launch finds the experiment by --state-dir, by its FILE (state dir runs/<name>), or
else the last one launched here. The state directory holds state.json (pids, URLs, addresses: never a key),
events.jsonl, history.json, logs/ and checkpoints/.
chain: economy.chain = "embedded" starts anvil on loopback and deploys everything; --chain-rpc URL --key-file PATH
(a 0600 file holding the researcher's key) uses any L2 instead; the key is never a flag.

the experiment file (TOML; example: experiments/experiment.toml):
{describe_fields()}
"""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="swarm-experiment", description="Launch, watch and finish a swarm experiment from one file.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def where(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("file", nargs="?", type=Path, help="the experiment file (finds runs/<name>)")
        sp.add_argument("--state-dir", type=Path, help="the experiment's state directory")

    la = sub.add_parser("launch", help="validate, deploy, fund, start bootstrap + monitor, print how to join")
    la.add_argument("file", type=Path, help="experiment.toml")
    la.add_argument("--state-dir", type=Path, help="default: runs/<experiment name>")
    la.add_argument("--chain-rpc", metavar="URL", help="use this L2 RPC instead of the embedded anvil")
    la.add_argument("--key-file", type=Path, metavar="PATH", help="0600 file with the researcher's key (rpc)")
    la.add_argument("--resume-from", type=Path, metavar="CHECKPOINT", help="a checkpoint folder to continue from")
    la.add_argument("--foreground", action="store_true", help="stay in the terminal; Ctrl-C stops everything")
    la.add_argument("--timeout", type=float, default=LAUNCH_TIMEOUT_S, help="seconds to wait for the start")
    st = sub.add_parser("status", help="processes, peers per stage, round, chain")
    where(st)
    st.add_argument("--json", action="store_true", help="print state and the monitor's snapshot as JSON")
    sp = sub.add_parser("stop", help="stop every process of the experiment")
    where(sp)
    rs = sub.add_parser("results", help="write the run's report (PNGs + report.md)")
    where(rs)
    rs.add_argument("--out", type=Path, help="default: <state dir>/results")
    rs.add_argument("--baseline-steps", type=int, default=None, help="cap on the baseline's steps")
    ex = sub.add_parser("export", help="assemble the newest complete checkpoint and a model card")
    where(ex)
    ex.add_argument("--checkpoint", type=Path, help="a checkpoint folder (default: the newest complete one)")
    ex.add_argument("--out", type=Path, help="default: <state dir>/export")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a.split("=", 1)[0] in ("--key", "--private-key", "--wallet-key") for a in argv):
        print("swarm-experiment: a key is never given on the command line; use --key-file PATH (chmod 600)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        args = build_parser().parse_args(argv)
        return {"launch": launch, "status": status, "stop": stop, "results": results, "export": export}[
            args.command](args)
    except (UsageError, ExperimentConfigError) as exc:
        print(f"swarm-experiment: {exc}\n(see swarm-experiment --help)", file=sys.stderr)
        return EXIT_USAGE
    except StateError as exc:
        print(f"swarm-experiment: {exc}", file=sys.stderr)
        return EXIT_STATE
    except KeyboardInterrupt:
        return 130


def _state_dir(args) -> Path:
    if args.state_dir is not None:
        return args.state_dir
    if args.file is not None:
        return Path("runs") / load_config(args.file).experiment.name
    if LAST.exists():
        return Path(LAST.read_text().strip())
    raise StateError("which experiment? give its file or --state-dir (nothing was launched from here)")


# ---------------------------------------------------------------------------------------------------- launch


def launch(args) -> int:
    cfg = load_config(args.file)
    state_dir = (args.state_dir or Path("runs") / cfg.experiment.name).resolve()
    if (state_dir / "state.json").exists() and supervisor_alive(read_state(state_dir)):
        raise UsageError(f"experiment {cfg.experiment.name!r} already runs with state directory {state_dir}: "
                         "`swarm-experiment stop` it first, or give another --state-dir")  # fmt: skip
    rpc = cfg.economy.chain == "rpc" or args.chain_rpc is not None
    if rpc and (args.chain_rpc is None or args.key_file is None):
        raise UsageError("a chain RPC needs both --chain-rpc URL and --key-file PATH (chmod 600)")
    if args.key_file is not None:
        from swarm.chain.wallet import Wallet, WalletError

        try:
            Wallet.from_file(args.key_file)
        except WalletError as exc:
            raise UsageError(f"--key-file: {exc}") from None
    if args.resume_from is not None:
        from swarm.apps.experiment.checkpoint import CheckpointError, read_manifest

        try:
            manifest = read_manifest(args.resume_from)
        except CheckpointError as exc:
            raise UsageError(f"--resume-from: {exc}") from None
        if manifest["workload"] != cfg.experiment.workload or manifest["n_stages"] != cfg.experiment.n_stages:
            raise UsageError(f"--resume-from: the checkpoint is {manifest['workload']} in {manifest['n_stages']} "
                             f"stages, the file says {cfg.experiment.workload} in {cfg.experiment.n_stages}")
    config_path = args.file.resolve()
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    for stale in ("state.json",):
        (state_dir / stale).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "swarm.apps.experiment.supervisor", "--config", str(config_path),
            "--state-dir", str(state_dir)]  # fmt: skip
    if rpc:
        argv += ["--chain-rpc", args.chain_rpc, "--key-file", str(args.key_file.resolve())]
    if args.resume_from is not None:
        argv += ["--resume-from", str(args.resume_from.resolve())]
    print(f"launching {cfg.experiment.name!r} ({cfg.experiment.workload}, {cfg.experiment.n_stages} stages, "
          f"chain: {'rpc' if rpc else cfg.economy.chain}); state in {state_dir}")  # fmt: skip
    if args.foreground:
        return _foreground(argv, state_dir, args.timeout)
    with open(state_dir / "logs" / "supervisor.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                cwd=os.getcwd())  # fmt: skip
    LAST.parent.mkdir(parents=True, exist_ok=True)
    LAST.write_text(str(state_dir))
    state = _wait_started(state_dir, lambda: proc.poll() is None, args.timeout)
    if state.get("status") != "running":
        _report_failure(state, state_dir, proc.poll())
        if proc.poll() is None:
            stop_supervisor(state_dir)
        proc.wait(30)
        return EXIT_FAIL
    _print_started(state, state_dir)
    return EXIT_OK


def _wait_started(state_dir: Path, alive, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last_step = None
    while time.monotonic() < deadline:
        try:
            state = read_state(state_dir)
        except StateError:
            state = {}
        if state.get("status") in ("running", "failed", "stopped"):
            return state
        if state.get("step") and state.get("step") != last_step:
            last_step = state["step"]
            print(f"  starting: {last_step}...", flush=True)
        if not alive():
            time.sleep(0.3)
            try:
                return read_state(state_dir)
            except StateError:
                return {"status": "failed", "error": "the supervisor exited before writing its state"}
        time.sleep(0.3)
    return {**state, "status": "failed", "error": f"not running after {timeout:.0f} s"}


def _report_failure(state: dict, state_dir: Path, code: int | None) -> None:
    print(f"swarm-experiment: launch failed: {state.get('error') or 'see the logs'} "
          f"(logs: {state_dir / 'logs'})", file=sys.stderr)  # fmt: skip


def _print_started(state: dict, state_dir: Path) -> None:
    chain = state.get("chain") or {}
    print(f"experiment {state['experiment']!r} is running (state: {state_dir})")
    if chain:
        print(f"  escrow {chain['escrow']} on {chain['rpc_url']} ({chain['kind']}), experiment id "
              f"{chain['experiment_id']}, verifier {chain['verifier']}")  # fmt: skip
    print(f"  dashboard: {state['dashboard_url']}")
    print("  volunteers join with:")
    print(f"    {state['join_command']}")
    if chain:
        print(f"    (to be paid add: --chain-rpc {chain['rpc_url']} --escrow {chain['escrow']} "
              "--wallet-key-file <0600 key file of a staked wallet>)")
    print(f"  status: swarm-experiment status --state-dir {state_dir}")
    print(f"  stop:   swarm-experiment stop --state-dir {state_dir}")


def _foreground(argv: list[str], state_dir: Path, timeout: float) -> int:
    from runtime.procs import ChildProcess

    with open(state_dir / "logs" / "supervisor.log", "ab") as log:
        child = ChildProcess(argv, name="supervisor", stdout=log, stderr=log, interrupt_signal=15)
        child.start()
    try:
        state = _wait_started(state_dir, lambda: child.alive, timeout)
        if state.get("status") != "running":
            _report_failure(state, state_dir, child.returncode)
            return EXIT_FAIL
        _print_started(state, state_dir)
        print("Ctrl-C stops everything.")
        while child.alive:
            time.sleep(0.5)
        return EXIT_OK if child.returncode == 0 else EXIT_FAIL
    except KeyboardInterrupt:
        print("stopping...")
        return EXIT_OK
    finally:
        child.stop(interrupt_grace=60)


# ---------------------------------------------------------------------------------------------------- status


def fetch_snapshot(url: str | None, timeout: float = 3.0) -> dict | None:
    if not url:
        return None
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/api/state", timeout=timeout) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def status(args) -> int:
    state_dir = _state_dir(args)
    state = read_state(state_dir)
    running = supervisor_alive(state)
    snap = fetch_snapshot(state.get("dashboard_url")) if running else None
    if args.json:
        print(json.dumps({"state": state, "running": running, "snapshot": snap}, indent=2))
        return EXIT_OK if running else EXIT_STATE
    shown = state.get("status") if running or state.get("status") in ("stopped", "failed") else "dead"
    print(f"experiment {state.get('experiment')!r}: {shown} (state: {state_dir})")
    if state.get("error"):
        print(f"  error: {state['error']}")
    for name, p in sorted((state.get("processes") or {}).items()):
        alive = running and pid_alive(p.get("pid"), p.get("started"))
        print(f"  {name:<14} pid {p.get('pid')}: {'running' if alive else 'exited'}")
    if running:
        print(f"  dashboard: {state.get('dashboard_url')}")
        print(f"  join: {state.get('join_command')}")
    if snap is not None:
        h = snap.get("health", {})
        print(f"  swarm: round {snap.get('round')}, {snap.get('n_peers')} stage peers, "
              f"{'healthy' if h.get('ok') else h.get('message') or 'not healthy'}")  # fmt: skip
        for st in snap.get("stages", []):
            mark = "  <- bottleneck" if st.get("bottleneck") else ""
            print(f"    stage {st['stage']}: {len(st['peers'])} peers, {st['throughput']:.1f} samples/s, "
                  f"load {st['load']}{mark}")  # fmt: skip
            for p in st["peers"]:
                print(f"      {p['peer_id']}  {p['throughput']:.1f} samples/s")
        c = snap.get("chain")
        if c:
            print(f"  chain: {c['contributions']} proofs verified, {c['finalized_rounds']} rounds finalized, "
                  f"{c['paid']:.4f} SWT paid, pool left {c['pool']:.4f} SWT")  # fmt: skip
    return EXIT_OK if running else EXIT_STATE


def stop(args) -> int:
    state_dir = _state_dir(args)
    state = read_state(state_dir)
    if not stop_supervisor(state_dir):
        print(f"experiment {state.get('experiment')!r} is not running (state: {state_dir})")
        return EXIT_OK
    state = read_state(state_dir)
    left = [n for n, p in (state.get("processes") or {}).items() if pid_alive(p.get("pid"), p.get("started"))]
    if left:
        update_state(state_dir, status="failed", error=f"still running after stop: {', '.join(left)}")
        print(f"swarm-experiment: still running after stop: {', '.join(left)}", file=sys.stderr)
        return EXIT_FAIL
    print(f"experiment {state.get('experiment')!r} stopped; nothing of it is running")
    return EXIT_OK


# ----------------------------------------------------------------------------------------- results, export


def results(args) -> int:
    from swarm.apps.experiment.results import write_results

    state_dir = _state_dir(args)
    out = write_results(state_dir, args.out or state_dir / "results", baseline_steps=args.baseline_steps)
    print(f"report: {out / 'report.md'}")
    return EXIT_OK


def export(args) -> int:
    from swarm.apps.experiment.results import export_model

    state_dir = _state_dir(args)
    out = export_model(state_dir, args.out or state_dir / "export", checkpoint=args.checkpoint)
    print(f"model: {out / 'model.safetensors'}; card: {out / 'MODEL_CARD.md'}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
