"""The flagship: L-MAE label completion on PASCAL VOC 2012 with the paper's settings (= `configs/lmae.py:voc`).

  python -m maskseg_jax.main --config=configs/lmae_voc.py --workdir=runs/lmae_voc_0.5
  python -m maskseg_jax.main --config=configs/lmae_voc.py:0.6 --config.data.root=/data/VOCdevkit/VOC2012

arg: the training mask ratio (default 0.5). Settings and the figures to expect: `configs/lmae.py` (voc). Needs an
accelerator; on a 2-core CPU use `configs/lmae.py:synthetic` or `configs/lmae.py:camvid,recipe`.
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location("lmae_family", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                           "lmae.py"))
_lmae = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_lmae)


def get_config(arg: str | None = None):
  return _lmae.get_config(",".join(["voc", *([arg] if arg else [])]))
