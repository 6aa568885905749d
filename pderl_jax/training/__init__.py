"""The generation step and its state."""

from pderl_jax.training.generation import GenerationMetrics, Trainer, TrainState

__all__ = ["GenerationMetrics", "Trainer", "TrainState"]
