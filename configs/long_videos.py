"""EVEREST pre-training on long, untrimmed videos with information-intensive frame selection.

Each training example is 2*alpha*tau candidate frames spread uniformly over the whole video (16
frames, tau = 8 pairs, alpha = 1.5: 24 candidates, one random phase per draw); the jitted step
scores every candidate pair by how many of its tokens survive EVEREST's redundancy-robust
selection and draws 8 pairs in proportion to that score (Gumbel-top-k, temporal order kept),
then pre-trains on them (the paper's Ego4D setting; the official code never shipped it).
Everything else is the Kinetics-400 EVEREST pre-training recipe of configs/recipes.py.

  size    S | B | L
  alpha   candidates per chosen pair (>= 1; alpha * tau must be an integer)
  videos  train videos in your list (sets steps per epoch); epochs  pre-training epochs
  batch, local  as in configs/recipes.py (local=1: tiny model, 8 frames of 64^2, 12 candidates)

    python -m everest_jax.main --config configs/long_videos.py:size=B,videos=9600 --workdir DIR \\
        --config.data.root=VIDEO_DIR --config.data.train_list=LIST
"""

from configs.common import parse_arg
from configs.recipes import get_recipe


def get_config(arg=None):
    a = parse_arg(arg, size="B", alpha=1.5, videos=0, epochs=800, batch=0, local=False)
    c = get_recipe("k400", f"job=pretrain,method=everest,size={a.size},batch={a.batch},videos={a.videos},"
                           f"local={int(a.local)}")
    c.dataset = "long_videos"
    c.data.update(sampling="candidate", candidate_alpha=a.alpha)
    if not a.local:
        steps_per_epoch = c.total_steps // 800  # the K400 recipe's epochs
        c.total_steps, c.warmup_steps = a.epochs * steps_per_epoch, min(40, a.epochs // 2) * steps_per_epoch
    return c
