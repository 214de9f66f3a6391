"""Supervised segmentation (DeepLabV3+, U-Net, FCN): `task.py` builds it from the shared segmenter wiring
(`methods/segmentation.py`, `methods/segmentation_eval.py`)."""
