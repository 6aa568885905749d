"""Test-session setup: the same persistent compilation cache as the command line (`PDERL_JAX_CACHE_DIR`),
so that the many identical small programs the tests build compile once."""

from pderl_jax.cli import enable_compilation_cache

enable_compilation_cache()
