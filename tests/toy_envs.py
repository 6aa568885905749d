"""State of the small deterministic counter tasks used by the rollout and generation tests."""

import jax
from flax import struct


@struct.dataclass
class CounterState:
    obs: jax.Array
    t: jax.Array
    lifetime: jax.Array
