"""pderl_jax: Proximal Distilled Evolutionary Reinforcement Learning (PDERL) in JAX."""

__version__ = "0.8.0"
