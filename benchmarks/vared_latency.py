"""VA-RED² at batch 1: does skipping the unchosen branches save time, not only FLOPs?

In one run, interleaved rounds, median wall time of a jitted batch-1 forward of
  dense        the dense R(2+1)D;
  forced_T_C   the VA-RED² network with every gate forced to (p_t=T, p_c=C) (static choices: the
               cheapest possible code for that policy), for (0,0), (1,0), (0,1), (1,1);
  switch       the VA-RED² network choosing per conv at run time (`lax.switch`), with its gates
               biased towards the choice given by --policy (untrained gates pick arbitrarily);
and each one's analytic FLOPs / dense. Random weights (timing does not depend on them).
With --per-conv, also each gated conv alone (interleaved rounds, median): all output channels and
time steps (`full`), the first half of the channels (`half_channels`: the kernel sliced as the
network does), every other output time step (`half_time`), and the 1x1 reconstruction of the other
half of the channels with its concatenation (`recon`): where a reduction's time goes.

    python benchmarks/vared_latency.py                     # small, 8x32x32 (~1 min on 2 CPU cores)
    python benchmarks/vared_latency.py --size 18 --frames 16 --image-size 112 --per-conv
    python benchmarks/vared_latency.py --input-dependent   # edge padding + the gates' motion cue (README)

Last line of stdout: {"rows": {name: {"ms", "flops_ratio"}}, "settings": {...}, "machine": {...}}, with
--per-conv also "per_conv": {conv: {"full_ms", "half_channels_ms", "half_time_ms", "recon_ms"}, "total": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vs_pytorch import interleaved, machine_record  # noqa: E402
from vared_jax.layers import conv3d  # noqa: E402
from vared_jax.model import (INPUT_DEPENDENT, R2Plus1D, VaRedR2Plus1D, conv_specs, dense_flops,  # noqa: E402
                             dense_params, fixed_flops, r2plus1d_18, small)


def biased(params, choice):
    """Every gate's logits made to prefer `choice` (p_t, p_c) whatever the input."""
    out = {}
    for name, layer in params.items():
        layer = dict(layer)
        for head, p in (("gate_t", choice[0]), ("gate_c", choice[1])):
            if head in layer:
                n = layer[head]["bias"].shape[0]
                layer[head] = {"kernel": jnp.zeros_like(layer[head]["kernel"]),
                               "bias": jnp.zeros(n).at[min(p, n - 1)].set(10.0)}
        out[name] = layer
    return out


def median_ms(fns: dict, rounds: int, iters: int) -> dict:
    """{name: (jitted fn, args)} -> {name: median ms per call}: `iters` calls per round, the fns in
    interleaved rounds (the first round compiles)."""
    def runner(f, a):
        def run():
            for _ in range(iters):
                out = f(*a)
            jax.block_until_ready(out)
        return run
    return {k: ms / iters for k, ms in interleaved({k: runner(f, a) for k, (f, a) in fns.items()}, rounds).items()}


def per_conv(config, shape, rounds: int, iters: int) -> dict:
    """Every gated conv alone at batch 1: full / half the output channels / half the output time
    steps / the channel reconstruction -> {conv: {"<variant>_ms"}, "total": {...}}."""
    out, key = {}, jax.random.key(1)
    for spec in (s for s in conv_specs(config, shape) if s.gated):
        x = jax.random.normal(key, (1, *spec.in_shape, spec.cin))
        w = jax.random.normal(key, (*spec.kernel, spec.cin, spec.cout)) * 0.01
        c, pad = spec.cout // 2, [(p, p) for p in spec.padding]
        twice = (spec.stride[0] * 2, *spec.stride[1:])
        y = jax.random.normal(key, (1, *spec.out_shape, c))
        r = jax.random.normal(key, (c, spec.cout - c)) * 0.01
        fns = {"full": (jax.jit(lambda x, w, st=spec.stride, pad=pad: conv3d(x, w, st, pad)), (x, w)),
               "half_channels": (jax.jit(lambda x, w, st=spec.stride, pad=pad, c=c: conv3d(x, w[..., :c], st, pad)),
                                 (x, w)),
               "half_time": (jax.jit(lambda x, w, st=twice, pad=pad: conv3d(x, w, st, pad)), (x, w)),
               "recon": (jax.jit(lambda y, r: jnp.concatenate([y, jnp.einsum("bthwc,cd->bthwd", y, r)], -1)), (y, r))}
        out[spec.name] = {f"{k}_ms": v for k, v in median_ms(fns, rounds, iters).items()}
        print(spec.name, " ".join(f"{k} {v:.2f}" for k, v in out[spec.name].items()), file=sys.stderr)
    out["total"] = {k: float(sum(row[k] for row in out.values())) for k in next(iter(out.values()))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=("small", "18"), default="small")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--policy", type=int, nargs=2, default=[1, 1], help="(p_t, p_c) the switch's gates prefer")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--per-conv", action="store_true", help="also time every gated conv alone (see above)")
    ap.add_argument("--input-dependent", action="store_true",
                    help="the networks of the input-dependent recipe: time padded with the edge frames (dense too), "
                         "gates fed the standardised motion cue (model.temporal_padding=edge, gate_motion, gate_norm)")
    args = ap.parse_args()
    options = INPUT_DEPENDENT if args.input_dependent else {}
    config = small(4, **options) if args.size == "small" else r2plus1d_18(400, **options)
    shape = (args.frames, args.image_size, args.image_size)
    video = jnp.asarray(np.random.default_rng(0).normal(size=(1, *shape, 3)), jnp.float32)
    vared = VaRedR2Plus1D(config)
    params = jax.jit(lambda: vared.init({"params": jax.random.key(0)}, video, forced=None)["params"])()
    dense = dense_flops(config, shape)
    fns = {"dense": (jax.jit(R2Plus1D(config).apply), {"params": dense_params(params)}, 1.0)}
    for choice in ((0, 0), (1, 0), (0, 1), (1, 1)):
        fns[f"forced_{choice[0]}_{choice[1]}"] = (jax.jit(lambda v, x, c=choice: vared.apply(v, x, forced=c)[0]),
                                                  {"params": params}, fixed_flops(config, shape, choice) / dense)
    switch_params = {"params": biased(params, args.policy)}
    switch = jax.jit(lambda v, x: vared.apply(v, x, mode="hard"))
    _, chosen = switch(switch_params, video)
    policy = {k: (int(np.argmax(c["t"][0])), int(np.argmax(c["c"][0]))) for k, c in chosen.items()}
    fns["switch"] = (jax.jit(lambda v, x: vared.apply(v, x, mode="hard")[0]), switch_params,
                     fixed_flops(config, shape, policy, include_gates=True) / dense)
    ms = median_ms({k: (f, (v, video)) for k, (f, v, _) in fns.items()}, args.rounds, args.iters)
    rows = {k: {"ms": ms[k], "flops_ratio": float(fns[k][2])} for k in fns}
    for k, r in rows.items():
        print(f"{k:12s} {r['ms']:8.2f} ms  x{r['ms'] / rows['dense']['ms']:.2f} time  x{r['flops_ratio']:.3f} FLOPs",
              file=sys.stderr)
    machine = dict(machine_record(len(os.sched_getaffinity(0))), device=str(jax.devices()[0].device_kind),
                   jax=jax.__version__)
    result = {"rows": rows, "settings": {**vars(args), "policy_layers": len(policy)}, "machine": machine}
    if args.per_conv:
        result["per_conv"] = per_conv(config, shape, args.rounds, args.iters)
        total = result["per_conv"]["total"]
        print("per conv, total: " + " ".join(f"{k} {v:.1f} (x{v / total['full_ms']:.2f})" for k, v in total.items()),
              file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
