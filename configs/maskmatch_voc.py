"""MaskMatch on PASCAL VOC 2012: UniMatch (configs/unimatch_voc.py) plus a 70%-masked student view trained
toward pseudo-labels of the complete image, with pseudo-labels ensembled over scales 0.75 / 1.0 / 1.25 (they
also drive UniMatch's weak-to-strong terms). The teacher is the student under stop-gradient.

  python -m maskseg_jax.main --config=configs/maskmatch_voc.py:1464 --config.data.root=/data/VOC2012 \
      --workdir=/runs/maskmatch_voc_1464
  # EMA teacher instead: --config.semi.ema_decay=0.999

arg: the labeled split size, 92 | 183 | 366 | 732 | 1464 (default 1464). l_mask 1.0, patch 32 and the scales are
our choices (only the abstract is public). Expected: at least UniMatch's 75.2 / 77.2 / 78.8 / 79.9 / 81.2 val
mIoU (R101, ImageNet-pretrained); the paper's gains over UniMatch are not reproduced here.
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "unimatch_voc", os.path.join(os.path.dirname(os.path.abspath(__file__)), "unimatch_voc.py"))
_unimatch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_unimatch)


def get_config(arg: str | None = None):
  c = _unimatch.voc_config(arg, "maskmatch", mask_ratio=0.7, mask_patch=32, ensemble_scales=(0.75, 1.0, 1.25))
  c.lock()
  return c
