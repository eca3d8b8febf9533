"""What EVEREST selects and reconstructs, for any video file.

    python -m everest_jax.visualize VIDEO --out DIR [--checkpoint CKPT] [--frames 16 --size 224 ...]

Writes to DIR:
  selection.png     a grid over the clip's frames: the frame, its motion scores, the pre-training
                    split (visible tokens green, reconstruction targets orange, dropped tokens
                    darkened) and the fine-tuning selection (kept tokens clear, dropped darkened)
  selection.gif     the pre-training split as an animation (and selection.mp4, H.264 by PyAV)
  reconstruction.png  with --checkpoint (a pre-training checkpoint): input, masked input (visible
                    tokens only), reconstruction (visible tokens + predicted targets) and target
                    (the kept tokens), for every frame
  tokens.npz        the token states (T', H', W') and scores, as the selection functions returned
  stmg_overlay.gif  with --stmg-checkpoint (stmg_jax.main's final/, gates trained; the panel is a
                    plugin of stmg_jax, stmg_jax/overlay.py): STMG streamed
                    over the video's first --stmg-frames consecutive frames; left the segmentation,
                    right the recompute map (dimmed where nothing was recomputed, tinted red by the
                    share of gated blocks that recomputed each region); also stmg_overlay.mp4,
                    stmg_overlay.png (a grid of frames) and stmg.npz (pred, recompute, flops)

The clip is `frames` frames `stride` apart from the middle of the video, resized on its short
side and centre-cropped to `size`. Without a checkpoint the patch embedding is randomly
initialised: the motion scores are then distances in a random projection of the pixels, which
ranks tokens by pixel change much as a trained embedding does. Predictions of normalised-pixel
models are shown after undoing the per-tubelet normalisation with the true tubelet's mean and
standard deviation, as VideoMAE's visualisation does.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from everest_jax import checkpoint, cli, selection
from everest_jax.config import ConfigError, ModelConfig
from everest_jax.data import EvalAugment, StrideSampler, decode, encode, normalize_video
from everest_jax.models import PretrainingModel
from everest_jax.errors import UserError
from everest_jax.targets import patchify

DROPPED, TARGET, VISIBLE = 0, 1, 2
COLOURS = {VISIBLE: (0, 200, 0), TARGET: (255, 140, 0)}  # RGB tints of the pre-training split
ALPHA = 0.45  # tint strength
DIM = 0.25  # brightness kept by dropped tokens


def load_clip(path, num_frames: int, stride: int, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8: `num_frames` frames `stride` apart from the middle of the video,
    short side resized and centre-cropped to `size`."""
    frames, _ = decode.read_clip(path, lambda n: StrideSampler(num_frames, stride, train=False)(n))
    views = EvalAugment(size, num_crops=1).views({"video": frames, "label": 0})["video"]
    return views[0]


def token_states(visible_idx: np.ndarray, target_idx: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
    """(T', H', W') int: VISIBLE, TARGET or DROPPED for one clip's index sets."""
    states = np.full(int(np.prod(grid)), DROPPED, np.int8)
    states[np.asarray(target_idx)] = TARGET
    states[np.asarray(visible_idx)] = VISIBLE
    return states.reshape(grid)


def select(model_config: ModelConfig, params, clip: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Run the model's own selection on one clip: {'states' (T', H', W'), 'keep' (T', H', W') bool
    (fine-tuning selection), 'scores' (T', H', W'), 'visible_idx', 'target_idx', 'pred'}."""
    model = PretrainingModel(model_config)
    video = jnp.asarray(normalize_video(clip))[None]
    pred, aux = jax.jit(lambda p, v, r: model.apply({"params": p}, v, rngs={"masking": r}))(
        params, video, jax.random.key(seed))
    grid = model_config.grid
    keep = np.zeros(model_config.num_tokens, bool)
    keep[np.asarray(selection.finetune_token_keep(aux["scores"], model_config.finetune_keep_ratio))[0]] = True
    return {"states": token_states(aux["visible_idx"][0], aux["target_idx"][0], grid),
            "keep": keep.reshape(grid), "scores": np.asarray(aux["scores"][0]).reshape(grid),
            "visible_idx": np.asarray(aux["visible_idx"][0]), "target_idx": np.asarray(aux["target_idx"][0]),
            "pred": np.asarray(pred[0])}


def token_map(per_token: np.ndarray, tubelet: int, patch: int) -> np.ndarray:
    """(T', H', W', ...) -> (T'*tubelet, H'*patch, W'*patch, ...): each token's value on its pixels."""
    return per_token.repeat(tubelet, 0).repeat(patch, 1).repeat(patch, 2)


def shade_split(clip: np.ndarray, states: np.ndarray, tubelet: int, patch: int) -> np.ndarray:
    """(T, H, W, 3) uint8 with visible tokens tinted green, targets orange, dropped ones darkened."""
    s = token_map(states, tubelet, patch)[..., None]
    x = clip.astype(np.float32)
    out = np.where(s == DROPPED, x * DIM, x)
    for state, colour in COLOURS.items():
        out = np.where(s == state, (1 - ALPHA) * x + ALPHA * np.asarray(colour, np.float32), out)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def shade_keep(clip: np.ndarray, keep: np.ndarray, tubelet: int, patch: int) -> np.ndarray:
    k = token_map(keep, tubelet, patch)[..., None]
    return np.where(k, clip, np.round(clip * DIM)).astype(np.uint8)


def reconstruct(clip: np.ndarray, result: dict, model_config: ModelConfig, normalized: bool) -> dict[str, np.ndarray]:
    """(T, H, W, 3) uint8 panels: 'masked' (visible tokens only), 'reconstruction' (visible
    tokens + predicted targets), 'target' (the kept tokens: visible + targets)."""
    c = model_config
    tt, p = c.tubelet_size, c.patch_size
    x = clip.astype(np.float32)[None] / 255.0
    tokens = np.asarray(patchify(jnp.asarray(x), tt, p))[0]  # (N, t*p*p, C) in [0, 1]
    pred = result["pred"].reshape(len(result["target_idx"]), tt * p * p, c.in_channels)
    true = tokens[result["target_idx"]]
    if normalized:  # undo the per-tubelet normalisation with the true tubelet's statistics
        pred = pred * (true.std(axis=1, ddof=1, keepdims=True) + 1e-6) + true.mean(axis=1, keepdims=True)
    masked = np.zeros_like(tokens)
    masked[result["visible_idx"]] = tokens[result["visible_idx"]]
    recon = masked.copy()
    recon[result["target_idx"]] = pred
    target = masked.copy()
    target[result["target_idx"]] = true
    return {name: unpatchify(np.clip(v, 0, 1), c) for name, v in
            (("masked", masked), ("reconstruction", recon), ("target", target))}


def unpatchify(tokens: np.ndarray, c: ModelConfig) -> np.ndarray:
    """(N, t*p*p, C) in [0, 1] -> (T, H, W, C) uint8; the inverse of targets.patchify."""
    t, h, w = c.grid
    tt, p = c.tubelet_size, c.patch_size
    x = tokens.reshape(t, h, w, tt, p, p, c.in_channels).transpose(0, 3, 1, 4, 2, 5, 6)
    return np.round(x.reshape(t * tt, h * p, w * p, c.in_channels) * 255).astype(np.uint8)


def save_grid(path, rows: dict[str, np.ndarray], title: str, cmap_rows: tuple[str, ...] = ()) -> None:
    """A PNG grid: one row per entry of `rows` ((T, H, W[, 3]) arrays), one column per frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    t = rows[names[0]].shape[0]
    fig, axes = plt.subplots(len(names), t, figsize=(1.4 * t, 1.5 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        for f in range(t):
            ax = axes[r, f]
            ax.imshow(rows[name][f], cmap="magma" if name in cmap_rows else None,
                      vmin=0 if name in cmap_rows else None,
                      vmax=float(rows[name].max()) if name in cmap_rows else None, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if f == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == 0:
                ax.set_title(f"frame {f}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_gif(path, frames: np.ndarray, fps: int = 4) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def plugins() -> list:
    """Panels other packages add (entry point group `everest_jax.visualize`, e.g. STMG's overlay:
    see stmg_jax/overlay.py for the interface), found without importing those packages here."""
    from importlib.metadata import entry_points

    return [ep.load() for ep in sorted(entry_points(group="everest_jax.visualize"), key=lambda ep: ep.name)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", help="a video file")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--checkpoint", help="a pre-training checkpoint (a run's final/ or a converted one); "
                                             "its config fixes frames, size, patch and tubelet")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--stride", type=int, default=4, help="frames between sampled frames")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--tubelet", type=int, default=2)
    parser.add_argument("--keep-ratio", type=float, default=0.3, help="EVEREST pre-training rho")
    parser.add_argument("--visible-ratio", type=float, default=0.1)
    parser.add_argument("--finetune-keep", type=float, default=0.6, help="fine-tuning / inference rho")
    parser.add_argument("--seed", type=int, default=0)
    extra = plugins()
    for plugin in extra:
        plugin.add_arguments(parser)
    args = parser.parse_args(argv)

    try:
        selection_args = dict(masking="everest", pretrain_keep_ratio=args.keep_ratio,
                              visible_ratio=args.visible_ratio, finetune_keep_ratio=args.finetune_keep)
        if args.checkpoint:
            config, kind, params = checkpoint.load_params(args.checkpoint)
            if kind != "pretrain":
                raise ConfigError(f"--checkpoint {args.checkpoint} is a {kind} checkpoint; give a pre-training one")
            config = ModelConfig.from_dict({**config.to_dict(), **selection_args})
        else:
            config = ModelConfig(size="tiny", num_frames=args.frames, image_size=args.size, patch_size=args.patch_size,
                                 tubelet_size=args.tubelet, **selection_args)
            video = jnp.zeros((1, config.num_frames, *config.image_size, 3))
            params = PretrainingModel(config).init({"params": jax.random.key(args.seed),
                                                    "masking": jax.random.key(args.seed)}, video)["params"]
            params = jax.tree.map(np.asarray, __import__("flax").linen.unbox(params))
        clip = load_clip(args.video, config.num_frames, args.stride, config.image_size)
        loaded = [(plugin, state) for plugin in extra if (state := plugin.load(args)) is not None]
    except UserError as e:
        cli.fail(f"{e.kind} error: {e}")
        return 2
    except FileNotFoundError as e:
        cli.fail(f"video error: {e}")
        return 2

    result = select(config, params, clip, args.seed)
    tt, p = config.tubelet_size, config.patch_size
    split = shade_split(clip, result["states"], tt, p)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    v, m = len(result["visible_idx"]), len(result["target_idx"])
    save_grid(out / "selection.png", {
        "frame": clip, "motion score": token_map(result["scores"], tt, p),
        "pre-training": split, f"fine-tune rho={config.finetune_keep_ratio}": shade_keep(clip, result["keep"], tt, p)},
        f"{pathlib.Path(args.video).name}: {v} visible (green), {m} targets (orange) of {config.num_tokens} tokens",
        cmap_rows=("motion score",))
    save_gif(out / "selection.gif", split)
    encode.write_video(out / "selection.mp4", split, fps=4, gop=4)
    np.savez(out / "tokens.npz", states=result["states"], keep=result["keep"], scores=result["scores"])
    written = ["selection.png", "selection.gif", "selection.mp4", "tokens.npz"]
    if args.checkpoint:
        panels = reconstruct(clip, result, config, normalized=True)
        save_grid(out / "reconstruction.png", {"input": clip, **panels},
                  f"{pathlib.Path(args.video).name}: reconstruction of {m} target tokens from {v} visible")
        written.append("reconstruction.png")
    for plugin, state in loaded:
        written += plugin.write(out, state)
    print(f"wrote {', '.join(written)} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
