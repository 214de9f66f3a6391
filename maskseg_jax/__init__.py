"""maskseg_jax: masked-modeling semantic segmentation in JAX/Flax NNX.

Where things live (one job per module):
  main.py            command line entry point (absl + ml_collections config_flags)
  config_base.py     the shared config schema every configs/*.py starts from
  train.py           the one training loop (mesh, data, state, restore, loop, eval, checkpoints)
  methods/           one module per method: builds model, optimizer, data and a pure train step
  models/            pure nnx.Modules (ResNet, DeepLabV3+, U-Net, FCN, L-MAE)
  masking/           patch masks (L-MAE strategies) and tile masks (selective masking)
  losses/            pure array losses returning (sum, count)
  metrics.py         confusion matrices, mIoU, PA-mIoU
  data/              sources (VOC, Cityscapes, folders, synthetic, TFDS), numpy transforms, grain pipelines
  checkpointing.py   the only Orbax importer
  metric_writer.py   the only metrics writer (JSONL + TensorBoard + progress + pictures)
  complete.py        label-completion command (L-MAE inference on folders)
"""

__version__ = "0.1.0"
