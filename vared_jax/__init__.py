"""VA-RED² (Pan et al., ICLR 2021): video-adaptive redundancy reduction for R(2+1)D.

Modules:
  layers   RedConv (conv + frozen-BN affine; with vared=True the soft-modulated conv: temporal
           subsampling + interpolation, channel slice + 1x1 reconstruction, gate, modes).
  model    R2Plus1DConfig, the dense R2Plus1D and VaRedR2Plus1D (shared param names),
           param helpers and the analytic FLOPs counter (dense, fixed-choice, expected).
  convert  torchvision r2plus1d_18 state dict -> dense param tree (BN folded into affines).
"""

from vared_jax.model import (R2Plus1D, R2Plus1DConfig, VaRedR2Plus1D, branch_flops, conv_specs, dense_flops,
                             dense_params, expected_flops, fixed_flops, infer_per_example, merge_params,
                             r2plus1d_18, small)

__all__ = ["R2Plus1D", "R2Plus1DConfig", "VaRedR2Plus1D", "branch_flops", "conv_specs", "dense_flops",
           "dense_params", "expected_flops", "fixed_flops", "infer_per_example", "merge_params",
           "r2plus1d_18", "small"]
