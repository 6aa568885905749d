"""`--backend mjx` builds the Gymnasium v5 tasks on MJX, and a run folder's record reopens them
(their sizes and steps against Gymnasium: test_mjx_env.py)."""

import pytest

from pderl_jax.config import TASKS
from pderl_jax.envs import make_environment
from pderl_jax.training.run_folder import environment_from_record, environment_record


@pytest.mark.parametrize("task", TASKS)
def test_mjx_tasks_reopen_from_their_record(task):
    env = make_environment(task, "mjx", episode_length=30)
    again = environment_from_record(environment_record(env), task)
    assert (again.backend, again.task, again.episode_length, again.obs_dim) == ("mjx", task, 30, env.obs_dim)
