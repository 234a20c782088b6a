"""rlhfkit: composable stages for reward modelling and RLHF research."""

__version__ = "0.1.0"
