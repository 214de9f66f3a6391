"""maskseg_jax: masked-modeling semantic segmentation in JAX/Flax NNX.

Where things live (one job per module; imports run downward: data/models/losses/metrics <- methods <-
train/main/complete):
  main.py            command line entry point (absl + ml_collections config_flags)
  complete.py        the `maskseg-complete` command (its logic: methods/lmae/)
  train.py           the one training loop (mesh, data, state, restore, loop, eval, checkpoints)
  config_base.py     the shared config schema every config file starts from, and the config-arg parser
  configs/           the config files, one per method family (`--config=lmae.py:ARG` from any folder)
  methods/<method>/  everything one method owns: lmae/, semi_supervised/, selective_masking/, supervised/
  methods/           base.py (the Task contract), segmentation*.py (segmenter wiring shared by methods)
  models/            shared segmenters (ResNet, DeepLabV3+, U-Net, FCN), pure nnx.Modules
  losses/            pure array losses returning (sum, count)
  metrics.py         confusion matrices, mIoU, PA-mIoU
  data/              sources (VOC, Cityscapes, CamVid, folders, synthetic, TFDS), numpy transforms, grain pipelines
  checkpointing.py   the only Orbax importer
  metric_writer.py   the only metrics writer (JSONL + TensorBoard + progress + pictures)
"""

__version__ = "0.1.0"
