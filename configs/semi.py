"""`--config=configs/semi.py` in a checkout: the packaged maskseg_jax/configs/semi.py (`--config=semi.py` from anywhere)."""
from maskseg_jax.configs.semi import *  # noqa: F401,F403
