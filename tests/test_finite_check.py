"""`ring_check_finite` flags a NaN or inf anywhere in the stored transitions."""

import jax.numpy as jnp
import numpy as np
import pytest

from pderl_jax.buffers import Transition, ring_add, ring_check_finite, ring_init


@pytest.mark.parametrize("field", ["state", "action", "next_state", "reward", "done", "truncated"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_value_in_any_field_is_flagged(field, bad):
    rng = np.random.default_rng()
    count = int(rng.integers(3, 10))
    items = Transition(*(jnp.asarray(rng.normal(size=shape).astype(np.float32))
                         for shape in [(count, 4), (count, 2), (count, 4), (count,), (count,), (count,)]))
    buffer = ring_add(ring_init(16, 4, 2), items)
    assert bool(ring_check_finite(ring_init(16, 4, 2)))
    assert bool(ring_check_finite(buffer))
    values = np.asarray(getattr(items, field)).copy()
    values.reshape(count, -1)[int(rng.integers(count)), 0] = bad
    broken = ring_add(ring_init(16, 4, 2), items.replace(**{field: jnp.asarray(values)}))
    assert not bool(ring_check_finite(broken)), field
