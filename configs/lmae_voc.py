"""`--config=configs/lmae_voc.py` in a checkout: the packaged maskseg_jax/configs/lmae_voc.py (`--config=lmae_voc.py` from anywhere)."""
from maskseg_jax.configs.lmae_voc import *  # noqa: F401,F403
