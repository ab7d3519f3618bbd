"""Pipeline throughput: samples/s through S stages served by peer processes on loopback vs one process.

Both sides run the same training loop (`swarm.pipeline.trainer.run_training`) over the same stage modules; the baseline
calls them in-process, the swarm over hivemind P2P. In one run it measures:
- codecs for activations/gradients: bytes, encode/decode time, error (what `wire.py`'s "int8" was chosen by);
- one process with 1 torch thread (just before and after each swarm variant, so each ratio is against the machine
  as it was then) and with all cores (a fresh process with OpenMP's passive wait policy);
- the swarm (one process per stage peer, 1 torch thread each) with and without int8 activations, with and without
  kept activations (stateless backward = the stage input sent again and a second forward), several micro-batches
  in flight; bytes per micro-batch; a per-micro-batch time breakdown (compute wall and CPU time, queue, codecs,
  transport, idle); the CPU every process used per micro-batch (stages, p2pd, DHT processes, trainer) and the
  ratio to one process that this CPU would allow if packed on the machine's cores (the "CPU bound");
- with `--widths`: the square-cube law, the swarm/one-process ratio and the communication share at several widths;
- with `--loss-steps`: the training loss of the swarm with and without int8 against one process, same samples.
`--quick` runs in under a minute. Also prints each peer's peak RSS (process + DHT + p2pd).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).parent))

from local_swarm import local_swarm

from swarm.models import get_workload
from swarm.network.dht import create_dht
from swarm.pipeline import wire
from swarm.pipeline.baseline import LocalStages
from swarm.pipeline.trainer import Trainer, run_training

LR = 1e-3
OLD = ("none", False, False, 4)  # the protocol before: fp32, input resent on backward, loss at the trainer
RESULTS = Path(__file__).with_name("results")


def baseline(workload, n_stages: int, batch_size: int, steps: int, warmup: int, *, keep: bool = True):
    """(report, CPU seconds per micro-batch) of one process training the same stages with the same loop."""
    stages = LocalStages(workload, n_stages, lr=LR, keep_activations=keep, loss_at_last_stage=keep)
    batches = workload.batches(batch_size, seed=0)
    run_training(stages, workload, batches, steps=warmup)
    cpu = time.process_time()
    report = run_training(stages, workload, batches, steps=steps)
    return report, (time.process_time() - cpu) / max(len(report.steps), 1)


def one_process_all_cores(options: dict, workload_name: str, n_stages: int, batch_size: int, steps: int,
                          warmup: int, threads: int) -> float:
    """Samples/s of one process with `threads` torch threads, in a fresh process: OpenMP reads its settings once,
    and with its default (spinning) wait policy 2 threads on a shared 2-core machine collapse (10-30 samples/s
    against ~100 for 1 thread), so it runs with OMP_WAIT_POLICY=PASSIVE, what a shared machine should use."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    argv = [sys.executable, __file__, "--one-process", json.dumps([workload_name, options, n_stages, batch_size, steps,
                                                                   warmup])]  # fmt: skip
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=True).stdout
    return float(out.strip().splitlines()[-1])


def _one_process_main(spec: str) -> None:
    name, options, n_stages, batch_size, steps, warmup = json.loads(spec)
    report, _ = baseline(get_workload(name, **options), n_stages, batch_size, steps, warmup)
    print(report.samples_per_second)


def cpu_by_role() -> dict[int, tuple[str, float]]:
    """{pid: (role, user+system CPU seconds)} of this process (the trainer) and every process under it: stage
    peers (`stage N`), p2pd daemons, and the DHT processes hivemind runs beside each peer and the trainer."""
    me = psutil.Process()
    out = {}
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if p.pid == me.pid:
            role = "trainer"
        elif "p2pd" in p.name() or any("p2pd" in c for c in cmd[:1]):
            role = "p2pd"
        elif any(c.endswith("stage_peer_loop.py") for c in cmd):
            role = f"stage {cmd[cmd.index('--stage') + 1]}" if "--stage" in cmd else "stage ?"
        else:
            role = "DHT"
        out[p.pid] = (role, t.user + t.system)
    return out


def cpu_delta(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds by role between two `cpu_by_role` snapshots (processes present in both)."""
    roles: dict[str, float] = {}
    for pid, (role, t) in after.items():
        if pid in before:
            roles[role] = roles.get(role, 0.0) + t - before[pid][1]
    return roles


def swarm_runs(workload_name, options, n_stages, batch_size, steps, warmup, variants, reference=None):
    """({(codec, keep, fused, in flight): (report, router stats, CPU s by role, reference)}, peer stats) for each
    variant, all against one local swarm. `reference()` (the one-process baseline) runs before the first variant
    and after each one, while the swarm idles: each variant is compared with the mean of the two around it."""
    workload = get_workload(workload_name, **options)
    results = {}
    with local_swarm(workload_name, n_stages, lr=LR, options=options) as swarm:
        dht = create_dht(swarm.initial_peers)
        try:
            ref = reference() if reference else None
            for codec, keep, fused, c in variants:
                with Trainer(dht, swarm.experiment, workload, n_stages=n_stages, batch_size=batch_size,
                             concurrency=c, codec=codec, keep_activations=keep,
                             loss_at_last_stage=fused) as trainer:  # fmt: skip
                    trainer.run(warmup)
                    trainer.router.stats.clear()
                    cpu = cpu_by_role()
                    report = trainer.run(steps)
                    cpu = cpu_delta(cpu, cpu_by_role())
                nxt = reference() if reference else None
                results[(codec, keep, fused, c)] = (report, dict(trainer.router.stats), cpu, (ref, nxt))
                ref = nxt
        finally:
            dht.shutdown()
    return results, swarm.stats


def breakdown(report, stats, n_stages: int) -> dict:
    """Per micro-batch, in s: wall time, and summed over its calls: compute (wall and CPU), queue, codecs,
    transport; per stage the idle share (1 - compute time / wall time)."""
    steps = max(len(report.steps), 1)
    wall = report.seconds / steps
    total = {k: sum(getattr(s, k) for s in stats.values()) / steps for k in
             ("seconds", "compute", "compute_cpu", "queue", "peer_codec", "local_codec", "transport")}  # fmt: skip
    busy = {s: sum(v.compute for (st, _), v in stats.items() if st == s) / report.seconds for s in range(n_stages)}
    cpu = {s: sum(v.compute_cpu for (st, _), v in stats.items() if st == s) / steps for s in range(n_stages)}
    sent = sum(s.bytes_sent + s.bytes_received for s in stats.values()) / steps
    comm = (total["transport"] + total["peer_codec"] + total["local_codec"]) / max(total["seconds"], 1e-9)
    return {"wall": wall, **total, "idle": {s: 1 - b for s, b in busy.items()}, "stage_cpu": cpu, "bytes": sent,
            "comm_share": comm}  # fmt: skip


def label(key) -> str:
    codec, keep, fused, c = key
    return f"{codec:>6} {'kept' if keep else 'resend':>8} {'last stage' if fused else 'trainer':>10} {c:>9}"


def print_breakdown(runs: dict, keys: list, n_stages: int) -> None:
    """The per-micro-batch time breakdown of `keys`, one row each (ms per micro-batch; calls summed)."""
    stages = " ".join(f"{f'cpu s{s}':>6}" for s in range(n_stages))
    idles = " ".join(f"{f'idle s{s}':>7}" for s in range(n_stages))
    print(f"per micro-batch, ms (its calls summed): {'variant':>30} {'wall':>6} {'calls':>6} {stages} {'no core':>7} "
          f"{'queue':>6} {'codecs':>6} {'transport':>9} {'trainer':>7} {idles} {'comm':>5} {'KiB':>5}")  # fmt: skip
    for key in keys:
        b = breakdown(*runs[key][:2], n_stages)
        ms = {k: 1e3 * b[k] for k in ("wall", "seconds", "compute", "compute_cpu", "queue", "peer_codec",
                                      "local_codec", "transport")}  # fmt: skip
        cpu = " ".join(f"{1e3 * b['stage_cpu'][s]:>6.1f}" for s in range(n_stages))
        idle = " ".join(f"{100 * b['idle'][s]:>6.0f}%" for s in range(n_stages))
        print(f"{'':>40}{' '.join(label(key).split()):>30} {ms['wall']:>6.1f} {ms['seconds']:>6.1f} {cpu} "
              f"{ms['compute'] - ms['compute_cpu']:>7.1f} {ms['queue']:>6.1f} {ms['peer_codec']:>6.1f} "
              f"{ms['transport']:>9.1f} {ms['local_codec']:>7.1f} {idle} {100 * b['comm_share']:>4.0f}% "
              f"{b['bytes'] / 2**10:>5.0f}")  # fmt: skip
    print("  (wall: wall time per micro-batch; calls: the round trips of its calls summed (several micro-batches are in "
          "flight, so they overlap); cpu sN: stage N's compute, CPU time; no core: compute wall time minus its CPU time "
          "(the stage waited for a core); queue: waiting for the stage's compute thread; codecs: the peers' decoding and "
          "encoding; transport: the rest of the round trip (p2pd, loopback, framing); trainer: the trainer's codecs; "
          "idle sN: share of the wall time stage N did not compute (bubbles); comm: (transport + codecs) / calls)")


def cpu_table(runs: dict, n_stages: int, one_cpu: float) -> list[tuple]:
    """CPU ms per micro-batch by process for each variant, against one process's; returns (key, total, bound)."""
    stages = [f"stage {s}" for s in range(n_stages)]
    print(f"CPU per micro-batch by process, ms (stage N: its compute thread + the rest of its process; one process "
          f"with 1 thread needs {1e3 * one_cpu:.1f}):")  # fmt: skip
    print(f"{'variant':>38} " + " ".join(f"{s:>15}" for s in stages) + f" {'p2pd':>6} {'DHT':>5} {'trainer':>7} "
          f"{'total':>6} {'x one':>5} {'cores busy':>10} {'bound':>5}")  # fmt: skip
    rows = []
    for key, (report, stats, cpu, _) in runs.items():
        steps = max(len(report.steps), 1)
        b = breakdown(report, stats, n_stages)
        per = {role: 1e3 * t / steps for role, t in cpu.items()}
        total = sum(per.values())
        cells = " ".join(f"{1e3 * b['stage_cpu'][s]:>6.1f} + {per.get(f'stage {s}', 0) - 1e3 * b['stage_cpu'][s]:>6.1f}"
                         for s in range(n_stages))  # fmt: skip
        # packed on 2 cores without bubbles, a micro-batch needs max(total / cores, busiest stage process) of wall
        cores = os.cpu_count() or 1
        need = max(total / cores, *(per.get(s, 0.0) for s in stages))
        bound = 1e3 * one_cpu / max(need, 1e-9)
        rows.append((key, total, bound))
        print(f"{' '.join(label(key).split()):>38} {cells} {per.get('p2pd', 0):>6.1f} {per.get('DHT', 0):>5.1f} "
              f"{per.get('trainer', 0):>7.1f} {total:>6.1f} {total / (1e3 * one_cpu):>5.2f} "
              f"{total / (1e3 * b['wall']):>10.2f} {bound:>5.2f}")  # fmt: skip
    print("  (x one: the swarm's CPU over one process's; cores busy: CPU / wall time; bound: the ratio to one 1-thread "
          "process if that CPU were packed on the cores with no bubbles and no other load)")
    return rows


def _int8_fp16_scales(t: torch.Tensor):
    """The int8 codec as it was before bfloat16 scales (float16 scales), for the table."""
    blocks = t.float().reshape(-1, wire.INT8_BLOCK)
    scale = (blocks.abs().amax(1, keepdim=True).clamp_min(1e-30) / 127.0).half()
    return torch.round(blocks / scale.float()).clamp(-127, 127).to(torch.int8), scale, t.shape


def codec_table(width: int, batch_size: int, block: int) -> None:
    """Bytes, time and error of each way of sending one activation tensor (1 torch thread); the error also on
    gradient-sized values (the same tensor x 1e-5: what crosses backward between stages)."""
    x = torch.randn(batch_size, block, width, generator=torch.Generator().manual_seed(0))
    rows = [("none", lambda t: wire.encode(t), wire.decode), ("int8 (ours)", lambda t: wire.encode(t, "int8"), wire.decode),
            ("int8, float16 scales", _int8_fp16_scales, lambda m: (m[0].float() * m[1].float()).reshape(m[2]))]  # fmt: skip
    from hivemind.compression import deserialize_torch_tensor, serialize_torch_tensor
    from hivemind.proto import runtime_pb2

    rows.append(("float16 (hivemind)", lambda t: serialize_torch_tensor(t, runtime_pb2.FLOAT16), deserialize_torch_tensor))
    try:
        import bitsandbytes.functional as bnb

        rows.append(("bnb blockwise 8-bit", lambda t: bnb.quantize_blockwise(t, blocksize=4096),
                     lambda q: bnb.dequantize_blockwise(*q)))  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - bitsandbytes is optional here
        print(f"  (bitsandbytes unavailable: {exc})")
    print(f"codecs for one {tuple(x.shape)} float32 activation ({x.numel() * 4 / 2**10:.0f} KiB):")
    for name, enc, dec in rows:
        try:
            for _ in range(2):
                y = dec(enc(x))
            t0 = time.perf_counter()
            for _ in range(10):
                m = enc(x)
            t1 = time.perf_counter()
            for _ in range(10):
                y = dec(m)
            t2 = time.perf_counter()
            g = 1e-5 * x
            grad_err = float((dec(enc(g)) - g).norm() / g.norm())
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"  {name:20} failed: {exc!r}"[:160])
            continue
        if hasattr(m, "ByteSize"):
            size = m.ByteSize()
        elif name.startswith("bnb"):
            size = m[0].numel() + 4 * m[1].absmax.numel()
        else:
            size = m[0].numel() + 2 * m[1].numel()
        err = float((y - x).norm() / x.norm())
        print(f"  {name:20} {size / 2**10:7.0f} KiB ({x.numel() * 4 / size:4.1f}x smaller) encode {1e3 * (t1 - t0) / 10:5.2f} ms "
              f"decode {1e3 * (t2 - t1) / 10:5.2f} ms  relative error {err:.1e}, on gradient-sized values {grad_err:.1e}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="S=2 at 1x width, fewer steps: under a minute")
    parser.add_argument("--workload", default="tinylm")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--stages", type=int, nargs="*", default=None, help="stage counts (default 2 3; quick: 2; none: skip)")
    parser.add_argument("--widths", type=int, nargs="*", default=None,
                        help="tinylm widths for the square-cube table (default 128 256 512; quick: none)")  # fmt: skip
    parser.add_argument("--loss-steps", type=int, default=None, help="loss comparison length (quick: 0, off)")
    parser.add_argument("--one-process", default=None, help=argparse.SUPPRESS)  # internal: one_process_all_cores
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.one_process:
        return _one_process_main(args.one_process)
    all_threads = torch.get_num_threads()
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the stage peers: one core each
    torch.set_num_threads(1)
    quick = args.quick
    stage_counts = args.stages if args.stages is not None else ([2] if quick else [2, 3])
    widths = args.widths if args.widths is not None else ([] if quick else [128, 256, 512])
    loss_steps = args.loss_steps if args.loss_steps is not None else (0 if quick else 300)
    steps, warmup = (16, 3) if quick else (60, 5)
    in_flight = [4] if quick else [1, 2, 4]
    options = {"n_layer": 4, "n_embd": 128, "block_size": 64} if args.workload == "tinylm" else {}
    workload = get_workload(args.workload, **options)
    print(f"load before: {os.getloadavg()[0]:.1f} (1-min load average), {os.cpu_count()} cores")
    print(f"workload {args.workload} {options}, micro-batch {args.batch_size}, {steps} steps per figure, "
          "1 torch thread per stage peer")
    if args.workload == "tinylm":
        codec_table(options["n_embd"], args.batch_size, options["block_size"])
    summary = []
    for n_stages in stage_counts:
        variants = [OLD, ("none", True, True, 4), ("int8", False, True, 4)] + ([] if quick else [("int8", True, False, 4)])
        variants += [("int8", True, True, c) for c in in_flight]

        def reference(n=n_stages):
            return baseline(workload, n, args.batch_size, steps, warmup)

        wide_before = one_process_all_cores(options, args.workload, n_stages, args.batch_size, steps, warmup,
                                            all_threads)  # fmt: skip
        runs, peer_stats = swarm_runs(args.workload, options, n_stages, args.batch_size, steps, warmup, variants,
                                      reference)  # fmt: skip
        refs = [r for _, _, _, pair in runs.values() for r in pair]
        one_sps = [r.samples_per_second for r, _ in refs]
        one = sum(one_sps) / len(one_sps)
        one_cpu = sum(c for _, c in refs) / len(refs)
        recompute = None if quick else baseline(workload, n_stages, args.batch_size, steps, warmup, keep=False)[0]
        wide_after = one_process_all_cores(options, args.workload, n_stages, args.batch_size, steps, warmup, all_threads)
        wide = (wide_before + wide_after) / 2
        print(f"\nS={n_stages} (load {os.getloadavg()[0]:.1f}): one process, 1 thread: {one:.1f} samples/s (mean of "
              f"{len(one_sps)} runs between the swarm's, {min(one_sps):.1f}-{max(one_sps):.1f}); {all_threads} threads "
              f"(OpenMP passive wait): {wide:.1f}/s ({wide_before:.1f} before the swarm, {wide_after:.1f} after)"
              + ("" if recompute is None else f"; 1 thread, recomputing backward and loss at the trainer: "
                                              f"{recompute.samples_per_second:.1f}/s"))  # fmt: skip
        print(f"{'codec':>6} {'backward':>8} {'loss at':>10} {'in flight':>9} {'samples/s':>10} {'one proc':>8} "
              f"{'/1 thread':>9} {'range':>11} {'/all cores':>10} {'KiB/mb':>7}")  # fmt: skip
        ratios = {}
        for key, (report, stats, _, (r0, r1)) in runs.items():
            b = breakdown(report, stats, n_stages)
            sps, pair = report.samples_per_second, (r0[0].samples_per_second, r1[0].samples_per_second)
            around = sum(pair) / 2
            ratios[key] = sps / around
            print(f"{label(key)} {sps:>10.1f} {around:>8.1f} {sps / around:>9.2f} {sps / max(pair):>5.2f}-"
                  f"{sps / min(pair):<5.2f} {sps / wide:>10.2f} {b['bytes'] / 2**10:>7.0f}")  # fmt: skip
        print("  (one proc: the 1-thread process measured just before and after that variant, mean; /1 thread against it,"
              " range: against the faster and the slower of the two, i.e. how much the machine's load moved meanwhile)")
        print_breakdown(runs, list(runs), n_stages)
        bounds = cpu_table(runs, n_stages, one_cpu)
        default = ("int8", True, True, max(in_flight))  # what a trainer does unless told otherwise
        sps = runs[default][0].samples_per_second
        bound = next(b for k, _, b in bounds if k == default)
        summary.append(f"S={n_stages}: {sps:.0f} samples/s = {ratios[default]:.2f}x one 1-thread process (CPU bound "
                       f"{bound:.2f}x), {sps / wide:.2f}x one {all_threads}-thread process (int8, kept, loss at the "
                       f"last stage, {default[3]} in flight; load {os.getloadavg()[0]:.1f})")  # fmt: skip
        for s in sorted(peer_stats, key=lambda s: s["stage"]):
            print(f"  stage {s['stage']} peer: peak RSS {s['peak_rss_mb']:.0f} MB (python {s['peak_self_rss_mb']:.0f} MB "
                  f"+ DHT + p2pd), {s['steps']} steps")  # fmt: skip
    if widths:
        summary.append(square_cube(args.batch_size, widths, steps, warmup))
    if loss_steps:
        summary.append(loss_effect(args.batch_size, loss_steps))
    trainer_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  trainer process (also ran the baselines): peak RSS {trainer_mb:.0f} MB")
    print(f"load after: {os.getloadavg()[0]:.1f}")
    print(f"pipeline: {'; '.join(summary)}")


def square_cube(batch_size: int, widths: list[int], steps: int, warmup: int) -> str:
    """S=2 tinylm at several widths (same depth): swarm/one-process ratio and communication share."""
    print(f"\nsquare-cube: tinylm, 4 layers, S=2, int8, kept, loss at the last stage, 4 in flight; widths {widths}")
    print(f"{'width':>6} {'one proc/s':>10} {'swarm/s':>8} {'ratio':>6} {'compute ms':>10} {'comm ms':>8} "
          f"{'comm share':>10} {'KiB/mb':>7} {'CPU not computing':>17} {'CPU bound':>9}")  # fmt: skip
    rows = []
    for width in widths:
        options = {"n_layer": 4, "n_embd": width, "block_size": 64}
        workload = get_workload("tinylm", **options)
        n = max(6, steps * 128 // width)
        key = ("int8", True, True, 4)
        runs, _ = swarm_runs("tinylm", options, 2, batch_size, n, warmup, [key],
                             lambda w=workload, n=n: baseline(w, 2, batch_size, n, warmup))  # fmt: skip
        report, stats, cpu, (r0, r1) = runs[key]
        one = (r0[0].samples_per_second + r1[0].samples_per_second) / 2
        one_cpu = (r0[1] + r1[1]) / 2
        b = breakdown(report, stats, 2)
        comm_ms = 1e3 * (b["transport"] + b["peer_codec"] + b["local_codec"])
        ratio = report.samples_per_second / one
        steps_done = max(len(report.steps), 1)
        total_cpu = sum(cpu.values()) / steps_done
        other = 1 - sum(b["stage_cpu"].values()) / max(total_cpu, 1e-9)  # CPU spent outside the stages' compute
        need = max(total_cpu / (os.cpu_count() or 1), *(cpu.get(f"stage {s}", 0.0) / steps_done for s in range(2)))
        bound = one_cpu / max(need, 1e-9)
        rows.append((width, ratio, b["comm_share"], other, bound))
        print(f"{width:>6} {one:>10.1f} {report.samples_per_second:>8.1f} {ratio:>6.2f} {1e3 * b['compute_cpu']:>10.1f} "
              f"{comm_ms:>8.1f} {100 * b['comm_share']:>9.0f}% {b['bytes'] / 2**10:>7.0f} {100 * other:>16.0f}% "
              f"{bound:>9.2f}")  # fmt: skip
    print("  (compute: CPU ms of the stages' compute per micro-batch; comm: transport + codecs, ms per micro-batch;"
          " comm share: of the calls' round-trip time; CPU not computing: share of all processes' CPU that is not a"
          " stage's forward/backward (p2pd, DHT, trainer, serving); CPU bound: the ratio if that CPU were packed on"
          " the cores)")
    plot_square_cube(rows)
    return "square-cube " + ", ".join(f"{w}: {r:.2f}x ({100 * c:.0f}% comm)" for w, r, c, _, _ in rows)


def plot_square_cube(rows) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    RESULTS.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    w = [r[0] for r in rows]
    ax.plot(w, [r[1] for r in rows], "o-", label="swarm / one process (samples/s)")
    ax.plot(w, [r[2] for r in rows], "s--", label="communication share of call time")
    ax.plot(w, [r[3] for r in rows], "^:", label="share of CPU not computing")
    ax.plot(w, [r[4] for r in rows], "x-.", label="ratio bound from CPU use")
    ax.set_xscale("log", base=2)
    ax.set_xticks(w, [str(x) for x in w])
    ax.set_xlabel("tinylm width (n_embd), 4 layers, S=2")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "square_cube.png", dpi=120)
    print(f"  plot: {RESULTS / 'square_cube.png'}")


def loss_effect(batch_size: int, steps: int) -> str:
    """Training loss of the swarm (fp32, int8) against one process over the same samples, 2 in flight."""
    options = {"n_layer": 2, "n_embd": 64, "block_size": 32}
    workload = get_workload("tinylm", **options)
    base, _ = baseline(workload, 2, batch_size, steps, 0)
    runs = {}
    for codec in ("none", "int8"):
        r, _ = swarm_runs("tinylm", options, 2, batch_size, steps, 0, [(codec, True, True, 2)])
        runs[codec] = r[(codec, True, True, 2)][0]
    print(f"\nloss: tinylm {options}, batch {batch_size}, {steps} steps, 2 in flight; final = mean of the last 10%")
    print(f"  one process: {base.final_loss:.4f}")
    for codec, r in runs.items():
        print(f"  swarm {codec}: {r.final_loss:.4f} ({100 * (r.final_loss / base.final_loss - 1):+.1f}%)")
    return "loss int8 vs fp32 swarm " + f"{100 * (runs['int8'].final_loss / runs['none'].final_loss - 1):+.1f}%"


if __name__ == "__main__":
    main()
