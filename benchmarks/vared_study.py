"""VA-RED² learning study on the synthetic motion videos (configs/vared_synthetic.py): does the
VA-RED² network trained to a FLOPs budget keep the dense network's accuracy, and is its policy
input-dependent (more temporal reduction on static clips)?

For each seed, with the same recipe for every run:
  1. `dense`: the dense R(2+1)D (small) trained from scratch for --dense-steps;
  2. from that network, --vared-steps more of either
       `dense_more`: the dense network (the same extra budget: the fair baseline),
       `vared`:      the VA-RED² network (gates and reconstructions fresh) at --budget;
  3. held-out top-1 of each (multi-view, as in training); for `vared` with each gate's argmax:
     the FLOPs of the chosen branches / dense, and the share of gated convs choosing a temporal /
     channel reduction on the held-out clips as they are ('moving') and with every frame replaced
     by the clip's first ('static': the same content, no motion); with --static-class (a fifth
     class whose shape does not move, in training and held-out data) also split by class
     ('class_static' / 'class_moving', the clips as they are) and per gated conv ('layers').

    python benchmarks/vared_study.py --workdir /tmp/vared_study            # 3 seeds (~20 min on 2 CPU cores)
    python benchmarks/vared_study.py --workdir /tmp/vared_quick --quick    # bookkeeping only (~2 min)
    python benchmarks/vared_study.py --workdir /tmp/vared_study --gate-logits   # the gates' logits per conv
    python benchmarks/vared_study.py --workdir /tmp/vared_static --static-class --reduction-cost  # CE cost
    python benchmarks/vared_study.py --workdir /tmp/vared_input --static-class --edge-padding --gate-motion \
        --gate-norm          # the options under which the policy depends on the clip (README)

Resumable: every finished run is appended to WORKDIR/runs.jsonl and skipped by a later invocation
(a run killed mid-way resumes from its own checkpoints); records made with other settings are
refused. Last line of stdout: {"runs": [...], "summary": {name: {"top1_mean", "top1_std", ...}},
"settings": {...}}; std over seeds (ddof 1; 0 with one seed).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from configs.vared_synthetic import get_config  # noqa: E402
from everest_jax import inputs  # noqa: E402
from vared_jax import train  # noqa: E402
from vared_jax.layers import MASKED  # noqa: E402


def run_config(args, seed: int, vared: bool, steps: int, init_from: str = ""):
    c = get_config(f"vared={str(vared).lower()},budget={args.budget},static={str(args.static_class).lower()}")
    c.seed, c.total_steps, c.init_from = seed, steps, init_from
    if args.flops_weight is not None:
        c.vared.flops_weight = args.flops_weight
    c.vared.flops_penalty = args.flops_penalty
    c.model.gate_norm, c.model.gate_motion = args.gate_norm, args.gate_motion
    c.model.temporal_padding = "edge" if args.edge_padding else "zeros"
    c.vared.train_backbone = not (vared and args.gates_only)
    c.warmup_steps = min(c.warmup_steps, steps // 10)
    c.log_every = max(steps // 5, 1)
    if args.quick:
        c.batch_size, c.data.num_eval_examples, c.eval.num_clips, c.eval.num_crops = 8, 16, 1, 1
        c.checkpoint.every_steps = steps
    return c


def finished_config(args, seed: int):
    """The config of a seed's VA-RED² run, to evaluate its finished network."""
    c = run_config(args, seed, True, args.vared_steps)
    c.vared.train_backbone = True  # (whatever trained it: the network is whole in its final/)
    return c


def first_views(config) -> tuple[np.ndarray, np.ndarray]:
    """(videos (N, T, H, W, 3), labels (N,)): the first view of each held-out video."""
    clip = train.validate(config)[1]
    videos, labels = [], []
    for batch in inputs.eval_views(config, clip, 0, 1):
        valid = batch["valid"].astype(bool)
        videos.append(batch["video"][:, 0][valid])
        labels.append(batch["label"][valid])
    return np.concatenate(videos), np.concatenate(labels)


def _chunks(config, videos):
    """`videos` in batches of eval.batch_size (the last may be smaller)."""
    n = config.eval.batch_size
    return (jnp.asarray(videos[i:i + n]) for i in range(0, len(videos), n))


def policy(config, workdir: pathlib.Path) -> dict:
    """Shares of gated convs choosing a temporal / channel reduction and FLOPs / dense, on the
    held-out clips moving and static (every frame = the first), each gate at its argmax; with a
    static class, also over the held-out clips of that class and of the others."""
    model, clip = train.validate(config)
    task = train.ClassifyTask(config, model, clip)
    params = train.load_params(workdir / "final")[2]
    predict = jax.jit(task.predict)
    video, label = first_views(config)
    still = label == config.data.num_classes - 1
    out = {}
    for name, v in (("moving", video), ("static", np.repeat(video[:, :1], video.shape[1], axis=1))):
        got = [jax.device_get(predict(params, x)) for x in _chunks(config, v)]
        for k in ("flops", "temporal_reduced", "channel_reduced"):
            values = np.concatenate([np.asarray(g[k]) for g in got])
            out[f"{name}_{k}"] = float(values.mean())
            if name == "moving" and config.data.static_class:
                out[f"class_static_{k}"], out[f"class_moving_{k}"] = float(values[still].mean()), float(values[~still].mean())
    if config.data.static_class:  # per gated conv: share of static-class / moving-class clips reducing time, channels
        choose = jax.jit(lambda p, v: task.net.apply({"params": p}, v, mode="hard")[1])
        got = [jax.device_get(choose(params, x)) for x in _chunks(config, video)]
        out["layers"] = {}
        for layer in got[0]:
            row = {}
            for key, head in (("t", "time"), ("c", "channels")):
                reduced = 1 - np.concatenate([np.asarray(g[layer][key][:, 0]) for g in got])
                row[f"{head}_static"] = float(reduced[still].mean())
                row[f"{head}_moving"] = float(reduced[~still].mean())
            out["layers"][layer] = row
    return out


def gate_logit_gaps(config, workdir: pathlib.Path) -> dict:
    """Per gated conv and head (t / c), on the first view of each held-out clip: the per-clip std of
    its logits (mean over the available choices), the mean margin between its two best choices
    and, with a static class, the largest |mean over static-class clips - mean over the others|
    of a choice's logit, in units of that std."""
    model, clip = train.validate(config)
    task = train.ClassifyTask(config, model, clip)
    params = train.load_params(workdir / "final")[2]

    def logits(p, v):
        _, state = task.net.apply({"params": p}, v, mode="hard", mutable=["intermediates"],
                                  capture_intermediates=lambda _, name: name == "gate_logits")
        return {k: d["gate_logits"][0] for k, d in state["intermediates"].items()}
    fn = jax.jit(logits)
    video, label = first_views(config)
    got = [jax.device_get(fn(params, x)) for x in _chunks(config, video)]
    still = label == config.data.num_classes - 1
    out = {}
    for layer in got[0]:
        for head, i in (("t", 0), ("c", 1)):
            x = np.concatenate([g[layer][i] for g in got])
            x = x[:, x.min(0) > MASKED / 2]  # the available choices
            if x.shape[1] < 2:
                continue
            std = x.std(0).mean()
            top2 = np.sort(x, -1)[:, -2:]
            row = {"std": float(std), "margin": float((top2[:, 1] - top2[:, 0]).mean())}
            if config.data.static_class:
                row["class_gap"] = float(np.abs(x[still].mean(0) - x[~still].mean(0)).max() / max(std, 1e-9))
            out[f"{layer}/{head}"] = row
    return out


def reduction_cost(args, seed: int, dense_dir: pathlib.Path) -> dict:
    """Per stage (stem_t, layer1..layer3) of the seed's dense network (the VA-RED² runs' start): the
    mean increase of the cross-entropy when that stage's gated convs compute every other time step
    (p_t = 1, full channels; every other conv at full compute), over the static-class and over the
    moving-class held-out clips (first views): what temporal reduction costs each kind of clip."""
    config = run_config(args, seed, True, args.vared_steps, str(dense_dir / "final"))
    config.vared.train_backbone = False  # the dense network as the backbone; gates unused (forced choices)
    task = train.ClassifyTask(config, *train.validate(config))
    params = task.full(jax.jit(task.init_params)())
    video, label = first_views(config)
    still = label == config.data.num_classes - 1
    gated = [n for n in params if "gate_t" in params[n]]

    def ce(forced):
        f = jax.jit(lambda p, v: task.net.apply({"params": p}, v, mode="hard", forced=forced)[0])
        logits = np.concatenate([np.asarray(f(params, x)) for x in _chunks(config, video)])
        return np.asarray(optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), jnp.asarray(label)))
    full, out = ce({}), {}
    for stage in ("stem_t", "layer1", "layer2", "layer3"):
        d = ce({n: (1, 0) for n in gated if n.startswith(stage)}) - full
        out[stage] = {"static": float(d[still].mean()), "moving": float(d[~still].mean())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--dense-steps", type=int, default=300)
    ap.add_argument("--vared-steps", type=int, default=150)
    ap.add_argument("--budget", type=float, default=0.65)
    ap.add_argument("--flops-weight", type=float, default=None, help="vared.flops_weight (default: the config's)")
    ap.add_argument("--flops-penalty", choices=("squared", "excess"), default="squared",
                    help="vared.flops_penalty (excess: only FLOPs above the budget are penalised)")
    ap.add_argument("--gate-norm", action="store_true", help="standardise each gate's pooled input (model.gate_norm)")
    ap.add_argument("--gate-motion", action="store_true",
                    help="also feed each gate its input's pooled |x[t+1] - x[t]| (model.gate_motion)")
    ap.add_argument("--edge-padding", action="store_true",
                    help="pad time with the edge frames (model.temporal_padding='edge'; dense runs too)")
    ap.add_argument("--gates-only", action="store_true",
                    help="VA-RED² runs train only the gates and reconstructions (vared.train_backbone=False)")
    ap.add_argument("--static-class", action="store_true", help="a fifth class whose shape does not move")
    ap.add_argument("--quick", action="store_true", help="2 + 2 steps, one seed, batch 8: bookkeeping only")
    ap.add_argument("--out", default="", help="also write the JSON here")
    ap.add_argument("--reduction-cost", action="store_true",
                    help="only print reduction_cost of each seed's finished dense run (JSON per seed)")
    ap.add_argument("--gate-logits", action="store_true",
                    help="only print gate_logit_gaps of each seed's finished VA-RED² run (JSON per seed)")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.dense_steps, args.vared_steps = args.seeds[:1], 2, 2
    settings = {k: getattr(args, k) for k in ("dense_steps", "vared_steps", "budget", "quick")}
    if args.static_class:  # (absent otherwise: the records made before the option still match)
        settings["static_class"] = True
    if args.flops_weight is not None:
        settings["flops_weight"] = args.flops_weight
    if args.flops_penalty != "squared":
        settings["flops_penalty"] = args.flops_penalty
    if args.gate_norm:
        settings["gate_norm"] = True
    if args.gate_motion:
        settings["gate_motion"] = True
    if args.edge_padding:
        settings["edge_padding"] = True
    if args.gates_only:
        settings["gates_only"] = True
    root = pathlib.Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    log = root / "runs.jsonl"
    done = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        r = json.loads(line)
        if r["settings"] != settings:
            raise SystemExit(f"{log} holds runs made with {r['settings']}, not {settings}; use another --workdir")
        done[(r["name"], r["seed"])] = r
    if args.reduction_cost:
        for seed in args.seeds:
            cost = reduction_cost(args, seed, root / f"seed{seed}" / "dense")
            print(json.dumps({"seed": seed, "reduction_cost": cost}))
        return
    if args.gate_logits:
        for seed in args.seeds:
            gaps = gate_logit_gaps(finished_config(args, seed), root / f"seed{seed}" / "vared")
            print(json.dumps({"seed": seed, "gate_logits": gaps}))
        return
    for seed in args.seeds:
        base = root / f"seed{seed}"
        plan = [("dense", False, args.dense_steps, ""), ("dense_more", False, args.vared_steps, base / "dense" / "final"),
                ("vared", True, args.vared_steps, base / "dense" / "final")]
        for name, vared, steps, init in plan:
            if (name, seed) in done:
                continue
            config = run_config(args, seed, vared, steps, str(init))
            print(f"== seed {seed}: {name}", file=sys.stderr, flush=True)
            final = train.run(config, str(base / name))
            record = {"name": name, "seed": seed, "settings": settings, "top1": final["eval_top1"],
                      "train_loss": final["loss"]}
            if vared:
                record.update(eval_flops=final["eval_flops"], **policy(config, base / name))
            with log.open("a") as f:
                f.write(json.dumps(record) + "\n")
            done[(name, seed)] = record
    runs = [done[(n, s)] for s in args.seeds for n in ("dense", "dense_more", "vared")]
    summary = {}
    for name in ("dense", "dense_more", "vared"):
        rs = [r for r in runs if r["name"] == name]
        keys = [k for k in rs[0] if k not in ("name", "seed", "settings", "layers")]
        summary[name] = {}
        for k in keys:
            v = np.asarray([r[k] for r in rs], np.float64)
            summary[name][f"{k}_mean"] = float(v.mean())
            summary[name][f"{k}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    for name, s in summary.items():
        print(f"{name:11s} top1 {100 * s['top1_mean']:.1f} +- {100 * s['top1_std']:.1f} %"
              + (f"  FLOPs {s['eval_flops_mean']:.3f}  temporal-reduced moving {s['moving_temporal_reduced_mean']:.2f}"
                 f" / static {s['static_temporal_reduced_mean']:.2f}" if name == "vared" else "")
              + (f"; static class {s['class_static_temporal_reduced_mean']:.2f} / moving classes "
                 f"{s['class_moving_temporal_reduced_mean']:.2f}" if "class_static_flops_mean" in s else ""), file=sys.stderr)
    result = {"runs": runs, "summary": summary, "settings": settings}
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
