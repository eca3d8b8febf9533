"""Something-Something v2 with the official EVEREST / VideoMAE recipe; see configs/recipes.py for the arguments.

    python -m everest_jax.main --config configs/ssv2.py:job=pretrain,method=everest,size=B --workdir DIR \
        --config.data.root=VIDEO_DIR --config.data.train_list=LIST
"""

from configs.recipes import get_recipe


def get_config(arg=None):
    return get_recipe("ssv2", arg)
