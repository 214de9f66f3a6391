"""S4MIM on PASCAL VOC 2012: UniMatch (configs/unimatch_voc.py) plus class-wise masked reconstruction,
mask-induced feature aggregation and MIM in semantic space, on a 50%-masked weak view (32 px patches).

  python -m maskseg_jax.main --config=configs/s4mim_voc.py:1464 --config.data.root=/data/VOC2012 \
      --workdir=/runs/s4mim_voc_1464

arg: the labeled split size, 92 | 183 | 366 | 732 | 1464 (default 1464). Weights l_rec 1.0, l_agg 1.0, l_sem 0.5,
mask ratio 0.5, patch 32, prototype momentum 0.99 are our choices (the paper's code and full text are not
public; see ../shared/specs/semi_supervised.md). Expected: at least UniMatch's 75.2 / 77.2 / 78.8 / 79.9 / 81.2
val mIoU (R101, ImageNet-pretrained); the paper reports gains over UniMatch we have not reproduced.
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "unimatch_voc", os.path.join(os.path.dirname(os.path.abspath(__file__)), "unimatch_voc.py"))
_unimatch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_unimatch)


def get_config(arg: str | None = None):
  c = _unimatch.voc_config(arg, "s4mim", mim_ratio=0.5, mim_patch=32, proto_momentum=0.99)
  c.lock()
  return c
