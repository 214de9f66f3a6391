"""`--config=configs/lmae.py` in a checkout: the packaged maskseg_jax/configs/lmae.py (`--config=lmae.py` from anywhere)."""
from maskseg_jax.configs.lmae import *  # noqa: F401,F403
