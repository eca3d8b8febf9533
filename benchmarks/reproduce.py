"""Reproduction study: does EVEREST pre-training give downstream accuracy comparable to VideoMAE's
tube masking at about half the pre-training compute, and does any pre-training beat training from
scratch when labels are few?

For each model size and seed (runs are in configs/reproduce.py, one recipe per job for all methods):
  1. pre-train with EVEREST, VideoMAE tube 90 % and random 90 % masking (and the ablations) for the
     same number of epochs on the unlabelled split;
  2. fine-tune each encoder, and a randomly initialised one ('scratch'), with the one shared
     fine-tuning recipe on the small labelled split (10 clips per class); top-1 on the test split;
  3. linear probe of each frozen encoder (and of the random-init one): mean-pooled encoder features
     of all tokens on the labelled split, standardised, L2-regularised logistic regression (full
     batch, L-BFGS), top-1 on the test split;
  4. per pre-training variant and size: GFLOPs per clip and peak memory of one compiled pre-training
     train step (XLA cost_analysis / memory_analysis, via benchmarks/everest_cost.py), and wall
     seconds per epoch from the run's measured clips/s.
Ablations (on --ablation-sizes, the same seeds): EVEREST keeping the least-moving tokens
(ascending), L1 / cosine / raw-pixel (RLT) distances, rho_pre 0.2 / 0.5, and fine-tuning the
EVEREST encoder on all tokens instead of rho = 0.6.

    python benchmarks/reproduce.py --workdir /tmp/study           # the default study (~2-2.5 h on 2 CPU cores)
    python benchmarks/reproduce.py --workdir /tmp/quick --quick   # toy setting: bookkeeping only, ~1 min

Resumable: every finished run (pre-training, fine-tuning, probe, cost) is appended to
WORKDIR/runs.jsonl; a later invocation skips those and continues (a run killed mid-way resumes from
its own checkpoints in WORKDIR/<size>/seed<s>/<job>_<name>). A record made with other settings is
refused rather than mixed in. Trainer logs and progress go to stderr; stdout gets the table and, as
its last line, one JSON object (also written to --out):
    {"runs": [{"method", "size", "seed", "pretrain_gflops_per_clip", "pretrain_s_per_epoch",
               "finetune_top1", "linear_top1", ...}, ...],
     "summary": {METHOD: {"finetune_top1_mean", "finetune_top1_std", "linear_top1_mean",
                          "pretrain_gflops_per_clip", ...}, "SIZE/METHOD": {...}, ...},
     "recipe": {...}, "executed": N}
`summary` holds "SIZE/METHOD" for every size and plain METHOD for the first of --sizes (the one the
ablations run on); std is over seeds (ddof 1; 0 with one seed); scratch has null GFLOPs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # configs/, everest_jax/ and everest_cost.py

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import everest_cost  # noqa: E402
from configs import reproduce as recipe  # noqa: E402
from everest_jax import ModelConfig, checkpoint, inputs, objectives  # noqa: E402
from everest_jax import train as trainer  # noqa: E402
from everest_jax.data import normalize_video  # noqa: E402
from everest_jax.models import PretrainingModel, VideoEncoder  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="runs.jsonl, checkpoints and outputs go here")
    p.add_argument("--quick", action="store_true", help="toy setting: tiny model, a few steps, 1 seed, few methods")
    p.add_argument("--sizes", default=None, help="comma-separated model sizes (default: tiny,mini; quick: tiny)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds 0..N-1 (default: 3; quick: 1)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all; quick: "
                   f"{','.join(recipe.QUICK_METHODS)}); known: {','.join(recipe.METHODS)}")
    p.add_argument("--ablation-sizes", default="tiny", help="sizes the ablation methods run on")
    p.add_argument("--regime", default="low_label", choices=sorted(recipe.REGIMES),
                   help="low_label: few labelled clips of other videos; same_split: fine-tune on the pre-training "
                   "videos with their labels, as the papers do (configs/reproduce.py)")
    p.add_argument("--pretrain-epochs", type=int, default=0,
                   help=f"pre-training epochs of the {recipe.PRETRAIN_EXAMPLES} unlabelled clips, every method alike "
                   f"(default: the regime's, {recipe.PRETRAIN_EPOCHS})")
    p.add_argument("--figure", default=None, help="PNG figure (default: WORKDIR/finetune_vs_gflops.png)")
    p.add_argument("--out", default=None, help="JSON result (default: WORKDIR/results.json)")
    args = p.parse_args(argv)
    args.sizes = (args.sizes or ("tiny" if args.quick else "tiny,mini")).split(",")
    args.seeds = list(range(args.seeds if args.seeds is not None else (1 if args.quick else 3)))
    args.methods = args.methods.split(",") if args.methods else list(
        recipe.QUICK_METHODS if args.quick else recipe.METHODS)
    args.ablation_sizes = args.ablation_sizes.split(",")
    for name in args.methods:
        if name not in recipe.METHODS:
            p.error(f"unknown method {name!r}; known: {', '.join(recipe.METHODS)}")
    for size in args.sizes:
        if size not in recipe.SIZES:
            p.error(f"unknown size {size!r}; known: {', '.join(recipe.SIZES)}")
    return args


# ---- bookkeeping ----------------------------------------------------------------------------


def fingerprint(obj) -> str:
    """A short hash of a JSON-able object: the settings a record was made with."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Ledger:
    """WORKDIR/runs.jsonl: one JSON record per finished run, keyed by `key`; `executed` counts the
    runs this process ran (not found in the file)."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        lines = path.read_text().splitlines() if path.exists() else []
        try:
            json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:  # cut short by a kill while appending: that run is not done
            lines = lines[:-1]
            path.write_text("".join(x + "\n" for x in lines))
        self.records = {r["key"]: r for r in map(json.loads, filter(None, lines))}
        self.executed = 0

    def get_or_run(self, key: str, settings: str, fn) -> dict:
        """The record of `key`, made by `fn()` (-> dict) and appended unless already there."""
        if key in self.records:
            record = self.records[key]
            if record["settings"] != settings:
                raise SystemExit(f"{self.path}: {key} was made with other settings ({record['settings']} != "
                                 f"{settings}); use another --workdir or delete that record")
            return record
        print(f"== {key}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        record = dict(fn(), key=key, settings=settings, wall_s=0.0)
        record["wall_s"] = time.perf_counter() - start
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.records[key] = record
        self.executed += 1
        return record


@contextlib.contextmanager
def compilation_cache(path: pathlib.Path):
    """JAX's persistent compilation cache in `path` while the study runs (the previous setting is
    restored afterwards). The fine-tuning steps of all methods of a size and seed are one program:
    it is compiled once, and a resumed study compiles nothing it compiled before."""
    from jax.experimental.compilation_cache import compilation_cache as cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    before = [getattr(jax.config, name) for name in names]
    for name, value in zip(names, (str(path), 0.2)):
        jax.config.update(name, value)
    cache.reset_cache()  # the cache is set up once per process, at its first compilation
    try:
        yield
    finally:
        for name, value in zip(names, before):
            jax.config.update(name, value)
        cache.reset_cache()


# ---- runs -----------------------------------------------------------------------------------


def run_config(args, job: str, size: str, seed: int, model: dict):
    config = recipe.get_config(f"job={job},size={size},regime={args.regime},epochs={args.pretrain_epochs},"
                               f"quick={int(args.quick)}")
    config.seed = seed
    config.model.update(model)
    return config


def settings_of(config) -> str:
    """The fingerprint of a run's settings; init_from (a path in the workdir) is left out."""
    return fingerprint({k: v for k, v in config.to_dict().items() if k != "init_from"})


def train(config, workdir: pathlib.Path) -> dict:
    """train.run with its log on stderr (stdout is for the table and the JSON line). A run left
    unfinished with other settings is refused: resuming its checkpoints would mix the two."""
    marker, settings = workdir / "study_settings.txt", settings_of(config)
    if marker.exists() and marker.read_text() != settings:
        raise SystemExit(f"{workdir} holds an unfinished run with other settings; delete it or use another --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    marker.write_text(settings)
    with contextlib.redirect_stdout(sys.stderr):
        final = trainer.run(config, str(workdir))
    if "clips_per_s" not in final:  # the run had finished before (a kill after it, before its record)
        logged = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
        final.update(next(m for m in reversed(logged) if "clips_per_s" in m))
    return final


def pretrain_run(ledger, args, size, seed, variant) -> dict:
    config = run_config(args, "pretrain", size, seed, recipe.PRETRAIN[variant])
    workdir = args.workdir / size / f"seed{seed}" / f"pretrain_{variant}"

    def fn():
        final = train(config, workdir)
        return {"kind": "pretrain", "workdir": str(workdir), "loss": final["loss"],
                "clips_per_s": final["clips_per_s"], "epochs": config.total_steps * config.batch_size /
                config.data.num_examples, "s_per_epoch": config.data.num_examples / final["clips_per_s"]}
    return ledger.get_or_run(f"pretrain/{size}/{variant}/seed{seed}", settings_of(config), fn)


def finetune_run(ledger, args, size, seed, method, pretrained: dict | None) -> dict:
    _, overrides = recipe.METHODS[method]
    config = run_config(args, "finetune", size, seed, overrides)
    config.init_from = pretrained["workdir"] if pretrained else ""
    workdir = args.workdir / size / f"seed{seed}" / f"finetune_{method}"

    def fn():
        final = train(config, workdir)
        return {"kind": "finetune", "top1": final["eval_top1"], "top5": final["eval_top5"],
                "loss": final["loss"], "train_accuracy": final.get("accuracy")}
    settings = fingerprint([settings_of(config), pretrained and pretrained["settings"]])
    return ledger.get_or_run(f"finetune/{size}/{method}/seed{seed}", settings, fn)


def cost_run(ledger, args, size, variant) -> dict:
    """GFLOPs per clip and peak GiB of one compiled pre-training step at the run's batch size."""
    config = run_config(args, "pretrain", size, 0, recipe.PRETRAIN[variant])

    def fn():
        # XLA's attention: the blocked one (auto on CPU) is a loop whose body cost_analysis counts once.
        model = PretrainingModel(ModelConfig.from_dict(dict(config.model.to_dict(), attention="xla")))
        c = model.config
        video = np.random.default_rng(0).standard_normal(
            (config.batch_size, c.num_frames, *c.image_size, c.in_channels), np.float32)
        labels = np.zeros((config.batch_size,), np.int32)
        loss = lambda p, v, l, r, t: objectives.pretrain_loss(p, model, v, r, train=t)  # noqa: E731
        # Zeros of the parameters' shapes: the counts do not depend on values, and no init is compiled.
        key = jax.random.key(0)
        shapes = jax.eval_shape(lambda: nn.unbox(model.init({"params": key, "masking": key}, video[:1])))
        params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes["params"])
        with contextlib.redirect_stdout(sys.stderr):
            cost, _ = everest_cost.compile_variant(loss, params, video, labels, True)
        return {"kind": "cost", "gflops_per_clip": cost["gflops"], "peak_gib": cost["peak_gib"],
                "batch": config.batch_size, "encoder_tokens": c.pretrain_counts[0]}
    return ledger.get_or_run(f"cost/{size}/{variant}", settings_of(config), fn)


# ---- linear probe ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def probe_data(size: str, regime: str, quick: bool):
    """(labelled videos (n, T, H, W, C), labels (n,), test videos, test labels, model config): the
    fine-tuning run's train and eval splits, through the trainer's own synthetic source."""
    config = recipe.get_config(f"job=finetune,size={size},regime={regime},quick={int(quick)}")
    model_config = ModelConfig.from_dict(dict(config.model.to_dict(), finetune_keep_ratio=1.0))
    out = []
    for train in (True, False):
        source = inputs.synthetic_split(config, model_config, train, model_config.num_frames, model_config.image_size)
        examples = [source[i] for i in range(len(source))]
        out += [normalize_video(np.stack([e["video"] for e in examples])), np.asarray([e["label"] for e in examples])]
    return (*out, model_config)


def pooled_features(encoder: VideoEncoder, video):
    """(B, T, H, W, C) -> (B, width): the encoder (with its final norm) on all tokens, mean-pooled."""
    n = encoder.config.num_tokens
    return encoder(encoder.embed(video), jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (video.shape[0], n))).mean(1)


@functools.partial(jax.jit, static_argnums=0)
def encoder_features(model_config, encoder_params, video):
    return VideoEncoder(model_config, final_norm=True).apply({"params": encoder_params}, video,
                                                             method=pooled_features)


@functools.partial(jax.jit, static_argnums=0)
def random_encoder(model_config, key):
    """A randomly initialised encoder's parameters, as a run from scratch starts (the encoder alone:
    a smaller program to compile than the whole model's init)."""
    c = model_config
    video = jnp.zeros((1, c.num_frames, *c.image_size, c.in_channels), jnp.float32)
    return nn.unbox(VideoEncoder(c, final_norm=True).init(key, video, method=pooled_features))["params"]


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def logistic_regression(train_x, train_y, test_x, *, num_classes: int, steps: int, l2: float):
    """Multinomial logistic regression on features standardised with the train split's statistics.

    train_x (n, D), train_y (n,), test_x (m, D) -> (train predictions (n,), test predictions (m,)).
    """
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std

    def loss(params):
        w, b = params
        logits = train_x @ w + b
        return optax.softmax_cross_entropy_with_integer_labels(logits, train_y).mean() + 0.5 * l2 * jnp.sum(w * w)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(params, updates), state), value

    params = (jnp.zeros((train_x.shape[1], num_classes)), jnp.zeros((num_classes,)))
    ((w, b), _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return jnp.argmax(train_x @ w + b, -1), jnp.argmax(test_x @ w + b, -1)


def probe_run(ledger, args, size, seed, encoder: str, pretrained: dict | None) -> dict:
    """Linear probe of the encoder of pre-training `encoder` ('scratch': the random-init encoder)."""
    probe = recipe.QUICK_PROBE if args.quick else recipe.PROBE

    def fn():
        videos, labels, test_videos, test_labels, model_config = probe_data(size, args.regime, args.quick)
        if pretrained:
            params = checkpoint.load_params(pathlib.Path(pretrained["workdir"]) / "final")[2]["encoder"]
        else:
            params = random_encoder(model_config, jax.random.key(seed))

        def features(v):
            return np.concatenate([np.asarray(encoder_features(model_config, params, v[i:i + 50]))
                                   for i in range(0, len(v), 50)])
        train_x = features(videos)
        train_pred, test_pred = logistic_regression(train_x, labels, features(test_videos),
                                                    num_classes=model_config.num_classes, **probe)
        # How much of the pooled feature varies from clip to clip: early masked pre-training makes
        # it small (one constant vector added to every token), which no probe or fine-tune can use.
        spread = np.linalg.norm(train_x - train_x.mean(0), axis=1).mean() / np.linalg.norm(train_x, axis=1).mean()
        return {"kind": "probe", "top1": float(np.mean(np.asarray(test_pred) == test_labels)),
                "train_top1": float(np.mean(np.asarray(train_pred) == labels)), "clip_dependent": float(spread)}
    config = run_config(args, "finetune", size, seed, {})
    settings = fingerprint([settings_of(config), probe, pretrained and pretrained["settings"]])
    return ledger.get_or_run(f"probe/{size}/{encoder}/seed{seed}", settings, fn)


# ---- the study ------------------------------------------------------------------------------


def run_study(args, ledger: Ledger) -> list[dict]:
    """Every run of the plan, in order (skipping finished ones) -> one row per (size, seed, method)."""
    rows = []
    for size in args.sizes:
        methods = [m for m in args.methods if m in recipe.MAIN_METHODS or size in args.ablation_sizes]
        variants = list(dict.fromkeys(recipe.METHODS[m][0] for m in methods if recipe.METHODS[m][0]))
        costs = {v: cost_run(ledger, args, size, v) for v in variants}
        for seed in args.seeds:
            pre = {v: pretrain_run(ledger, args, size, seed, v) for v in variants}
            finetuned = {m: finetune_run(ledger, args, size, seed, m, pre.get(recipe.METHODS[m][0])) for m in methods}
            encoders = variants + (["scratch"] if "scratch" in methods else [])
            probes = {e: probe_run(ledger, args, size, seed, e, pre.get(e)) for e in encoders}
            for m in methods:
                variant = recipe.METHODS[m][0]
                rows.append(row(m, size, seed, pre.get(variant), costs.get(variant), finetuned[m],
                                probes[variant or "scratch"]))
    return rows


def row(method, size, seed, pre: dict | None, cost: dict | None, ft: dict, probe: dict) -> dict:
    """One (method, size, seed) of the result: its pre-training, cost, fine-tuning and probe records."""
    def get(record, key):
        return record[key] if record else None
    return {"method": method, "size": size, "seed": seed, "pretrain": recipe.METHODS[method][0],
            "pretrain_gflops_per_clip": get(cost, "gflops_per_clip"), "pretrain_peak_gib": get(cost, "peak_gib"),
            "pretrain_s_per_epoch": get(pre, "s_per_epoch"), "pretrain_epochs": get(pre, "epochs"),
            "pretrain_loss": get(pre, "loss"), "pretrain_wall_s": get(pre, "wall_s"),
            "finetune_top1": ft["top1"], "finetune_top5": ft["top5"], "finetune_wall_s": ft["wall_s"],
            "linear_top1": probe["top1"], "linear_train_top1": probe["train_top1"],
            "feature_clip_dependent": probe["clip_dependent"], "probe_wall_s": probe["wall_s"]}


def mean_std(values) -> tuple[float, float]:
    """Mean and standard deviation over seeds (ddof 1; 0 for a single seed)."""
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarize(rows: list[dict], first_size: str) -> dict:
    """{"SIZE/METHOD": stats} for every size, plus {METHOD: stats} for `first_size`."""
    summary = {}
    for key in dict.fromkeys(f"{r['size']}/{r['method']}" for r in rows):
        group = [r for r in rows if f"{r['size']}/{r['method']}" == key]
        first = group[0]
        ft_mean, ft_std = mean_std([r["finetune_top1"] for r in group])
        lin_mean, lin_std = mean_std([r["linear_top1"] for r in group])
        s = {"size": first["size"], "pretrain": first["pretrain"], "n_seeds": len(group),
             "finetune_top1_mean": ft_mean, "finetune_top1_std": ft_std,
             "linear_top1_mean": lin_mean, "linear_top1_std": lin_std,
             "feature_clip_dependent_mean": mean_std([r["feature_clip_dependent"] for r in group])[0],
             "pretrain_gflops_per_clip": first["pretrain_gflops_per_clip"],
             "pretrain_peak_gib": first["pretrain_peak_gib"], "pretrain_s_per_epoch_mean": None,
             "pretrain_wall_s_mean": None, "finetune_wall_s_mean": mean_std([r["finetune_wall_s"] for r in group])[0]}
        if first["pretrain"]:
            s["pretrain_s_per_epoch_mean"] = mean_std([r["pretrain_s_per_epoch"] for r in group])[0]
            s["pretrain_wall_s_mean"] = mean_std([r["pretrain_wall_s"] for r in group])[0]
        summary[key] = s
    for key, s in list(summary.items()):  # compute ratios to VideoMAE tube masking of the same size
        tube = summary.get(f"{s['size']}/videomae_tube")
        for field in ("pretrain_gflops_per_clip", "pretrain_s_per_epoch_mean"):
            s[field.replace("_mean", "") + "_ratio_to_tube"] = (
                s[field] / tube[field] if tube and s[field] is not None else None)
    summary.update({key.split("/", 1)[1]: s for key, s in list(summary.items()) if s["size"] == first_size})
    return summary


def fmt(value, spec: str) -> str:
    """format(value, spec), or '-' as wide, for None."""
    return "-".rjust(int(spec.split(".")[0])) if value is None else format(value, spec)


def print_table(summary: dict) -> None:
    print(f"{'size/method':32s} {'seeds':>5s} {'fine-tune top-1':>16s} {'linear top-1':>14s} {'GFLOPs/clip':>11s} "
          f"{'x tube':>6s} {'peak GiB':>8s} {'s/epoch':>8s} {'clip-dep':>8s}")
    for key, s in summary.items():
        if "/" not in key:
            continue
        print(f"{key:32s} {s['n_seeds']:5d} {s['finetune_top1_mean']:9.3f} ± {s['finetune_top1_std']:.3f} "
              f"{s['linear_top1_mean']:7.3f} ± {s['linear_top1_std']:.3f} "
              f"{fmt(s['pretrain_gflops_per_clip'], '11.3f')} "
              f"{fmt(s['pretrain_gflops_per_clip_ratio_to_tube'], '6.2f')} {fmt(s['pretrain_peak_gib'], '8.3f')} "
              f"{fmt(s['pretrain_s_per_epoch_mean'], '8.1f')} {s['feature_clip_dependent_mean']:8.3f}")


def plot(rows: list[dict], summary: dict, path: pathlib.Path) -> None:
    """Fine-tuning top-1 against pre-training GFLOPs per clip, one panel per size: a dot per seed,
    the mean with a +-1 std bar per method; scratch (no pre-training) at 0 GFLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(dict.fromkeys(r["size"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colours = {m: plt.get_cmap("tab20")(i % 20) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(sizes), figsize=(6.5 * len(sizes), 4.8), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for m in methods:
            group = [r for r in rows if r["size"] == size and r["method"] == m]
            if not group:
                continue
            x = group[0]["pretrain_gflops_per_clip"] or 0.0
            ax.scatter([x] * len(group), [r["finetune_top1"] for r in group], s=14, alpha=0.5, color=colours[m])
            s = summary[f"{size}/{m}"]
            ax.errorbar([x], [s["finetune_top1_mean"]], yerr=[s["finetune_top1_std"]], fmt="o", ms=8, capsize=4,
                        color=colours[m], label=f"{m} ({s['n_seeds']} seeds)")
        ax.set(title=f"{size}: fine-tuning top-1 vs pre-training cost", ylabel="fine-tuning top-1 (test split)",
               xlabel="pre-training GFLOPs per clip (XLA, train step; scratch: 0)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.workdir = pathlib.Path(args.workdir).absolute()
    args.workdir.mkdir(parents=True, exist_ok=True)
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # Orbax's INFO chatter
    ledger = Ledger(args.workdir / "runs.jsonl")
    start = time.perf_counter()
    with compilation_cache(args.workdir / "xla_cache"):
        rows = run_study(args, ledger)
    summary = summarize(rows, args.sizes[0])
    result = {"runs": rows, "summary": summary, "executed": ledger.executed,
              "recipe": {"regime": args.regime, "sizes": {s: recipe.SIZES[s] for s in args.sizes}, "seeds": args.seeds,
                         "pretrain": dict(recipe.PRETRAIN),
                         "pretrain_run": run_config(args, "pretrain", args.sizes[0], 0, {}).to_dict(),
                         "finetune_run": run_config(args, "finetune", args.sizes[0], 0, {}).to_dict(),
                         "finetune_overrides": {m: recipe.METHODS[m][1] for m in args.methods},
                         "probe": recipe.QUICK_PROBE if args.quick else recipe.PROBE, "quick": args.quick}}
    figure = pathlib.Path(args.figure) if args.figure else args.workdir / "finetune_vs_gflops.png"
    out = pathlib.Path(args.out) if args.out else args.workdir / "results.json"
    plot(rows, summary, figure)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"{ledger.executed} runs executed in {time.perf_counter() - start:.0f} s; figure {figure}, JSON {out}",
          file=sys.stderr)
    print_table(summary)
    print(json.dumps(result, default=str), flush=True)
    return result


if __name__ == "__main__":
    main()
