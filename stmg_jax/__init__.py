"""STMG: streaming video segmentation that skips residual blocks and unchanged regions.

Modules (one idea each):
  config       SegNetConfig (dense network), StreamConfig (bins, capacities, thresholds, key
               frames) and the input-size / bin-grid checks that name the offending field.
  model        the dense network: ResNet-18/34-style encoder (frozen-affine instead of BatchNorm:
               local and identical at train and test time) + SwiftNet ladder decoder; its
               gateable blocks are the identity-shortcut BasicBlocks.
  distortion   per-bin inter-frame distortion, bins <-> maps, gather with halo, scatter.
  generator    the Spatial-Temporal Mask Generator (per block: gate logit + per-bin logits).
  streaming    the jitted batch-1 step (state, frame) -> (state, logits, stats) with one lax.switch
               per block over reuse and the capacity levels (static k bins, halo 2).
  masked       the batched masked-compute forward and straight-through Gumbel-sigmoid gates
               used for training.
  train        dense training, gate training (CE + distillation + FLOPs budget), mIoU.
  stream_eval  dense vs streaming over a video: frames/s, FLOPs/frame, skip rates, mIoU, agreement.
  live         STMG alone over a video file, frame by frame in constant memory, with its overlay.
  cli          what the command lines share: input errors as one line.
  checkpoint   parameter checkpoints (Orbax + stmg.json) with an architecture check.
  testing      NumPy-drawn random weights for fast tests.
"""
