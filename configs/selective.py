"""`--config=configs/selective.py` in a checkout: the packaged maskseg_jax/configs/selective.py (`--config=selective.py` from anywhere)."""
from maskseg_jax.configs.selective import *  # noqa: F401,F403
