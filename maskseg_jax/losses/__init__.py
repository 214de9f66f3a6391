"""Pure array losses, one module per family:

  segmentation.py    CE with ignore, class-weighted CE (L-MAE), class-frequency weights
  consistency.py     pseudo-labels, confidence CE, CutMix targets, OHEM, masked MSE (semi-supervised)
  feature.py         EMA class prototypes and cosine aggregation (S4MIM)
  reconstruction.py  L1, SSIM, MS-SSIM (selective-masking pretraining)
"""
