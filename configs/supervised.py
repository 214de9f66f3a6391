"""`--config=configs/supervised.py` in a checkout: the packaged maskseg_jax/configs/supervised.py (`--config=supervised.py` from anywhere)."""
from maskseg_jax.configs.supervised import *  # noqa: F401,F403
