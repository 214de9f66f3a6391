"""The flagship: L-MAE label completion on PASCAL VOC 2012 with the paper's settings (= `lmae.py:voc`).

  python -m maskseg_jax.main --config=lmae_voc.py --workdir=runs/lmae_voc_0.5
  python -m maskseg_jax.main --config=lmae_voc.py:0.6 --config.data.root=/data/VOCdevkit/VOC2012

arg: the training mask ratio (default 0.5). Settings and the figures to expect: `lmae.py` (voc). Needs an
accelerator; on a 2-core CPU use `lmae.py:synthetic` or `lmae.py:camvid,recipe`.
"""

from maskseg_jax.configs import lmae as _lmae

ARGS = ("", "0.6")


def get_config(arg: str | None = None):
  return _lmae.get_config(",".join(["voc", *([arg] if arg else [])]))
