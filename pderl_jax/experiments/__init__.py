"""Experiments around the methods: the paper's comparison (Table 1, Figure 4), the paper's published
numbers, and PPO from brax.training as a baseline."""
