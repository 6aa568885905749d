"""DDPG/TD3 learner and exploration noise against independent float64 NumPy references.

The references below re-implement the official networks (ERL LayerNorm: unbiased std, eps outside
the square root), the DDPG step of the official `DDPG.update_parameters` (critic regression to
r + gamma (1 - d) Q'(s', mu'(s')), torch `clip_grad_norm_`, Adam, actor ascent on the *updated*
critic, soft target updates) and TD3 (twin critics, target smoothing, delayed actor), all in
float64 with gradients by central finite differences on small networks. Nothing here calls the
package to compute an expected value; `jax.random.normal` is only used to reproduce the noise that
the package draws from a given key.

Every test draws fresh random inputs; the seed is printed in each assertion message and can be
replayed with LEARNER_TEST_SEED=<seed>.
"""

from __future__ import annotations

import functools
import os
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from pderl_jax.buffers.ring import RingBuffer, Transition
from pderl_jax.config import LearnerConfig, NetworkConfig
from pderl_jax.learner.off_policy import Learner
from pderl_jax.learner.noise import ou_noise_step

SMALL = NetworkConfig(actor_hidden=(8, 8), critic_input_width=6, critic_hidden_width=5)
OBS, ACT, B = 3, 2, 8
# Hyperparameters large enough that every part of the step moves the parameters visibly.
BIG_STEPS = dict(actor_lr=1e-2, critic_lr=3e-2, tau=0.05, gamma=0.9)
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8


# ----------------------------------------------------------------------------- helpers
def new_rng():
    """Fresh unseeded draws; set LEARNER_TEST_SEED to replay a seed from a failure message."""
    seed = int(os.environ.get("LEARNER_TEST_SEED", np.random.SeedSequence().entropy % (2**63)))
    return np.random.default_rng(seed), seed


def jax_key(rng):
    return jax.random.PRNGKey(int(rng.integers(2**31)))


def to64(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def random_params(template, rng, kernel_gain=1.5):
    """Random float32 parameters with the template's structure (not the package init)."""

    def leaf(path, x):
        name = path[-1].key
        shape = x.shape
        if name == "kernel":
            v = rng.normal(0.0, kernel_gain / np.sqrt(shape[-2]), shape)
        elif name == "bias":
            v = rng.normal(0.0, 0.3, shape)
        elif name == "gamma":
            v = 1.0 + 0.3 * rng.normal(size=shape)
        elif name == "beta":
            v = 0.3 * rng.normal(size=shape)
        else:
            raise AssertionError(f"unexpected parameter {path}")
        return jnp.asarray(v, jnp.float32)

    return jax.tree_util.tree_map_with_path(leaf, template)


def random_batch(rng, n=B, obs=OBS, act=ACT):
    """float32 Transition with some terminal rows; truncated set on some of them."""
    done = rng.permutation(np.r_[np.ones(n // 2), np.zeros(n - n // 2)])
    truncated = done * rng.integers(0, 2, n)
    truncated[np.flatnonzero(done)[0]] = 1.0  # at least one time-limit end
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return Transition(
        state=f32(rng.normal(size=(n, obs))),
        action=f32(rng.uniform(-1, 1, (n, act))),
        next_state=f32(rng.normal(size=(n, obs))),
        reward=f32(rng.normal(size=n)),
        done=f32(done),
        truncated=f32(truncated),
    )


def random_state(learner, rng):
    """A LearnerState with fresh Adam state, random online nets and *different* random targets.

    The structure comes from `jax.eval_shape(learner.init)` (no compilation); `learner.init`
    itself is exercised in `test_official_sizes_init_and_training_progress`.
    """
    shapes = jax.eval_shape(learner.init, jax.random.PRNGKey(0))
    state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)  # zero moments, count 0 = fresh Adam
    return state.replace(
        actor=random_params(state.actor, rng),
        critic=random_params(state.critic, rng),
        actor_target=random_params(state.actor, rng),
        critic_target=random_params(state.critic, rng),
    )


def adam_state(opt):
    s = opt[0]
    assert s._fields == ("count", "mu", "nu"), s
    return int(s.count), to64(s.mu), to64(s.nu)


def with_adam_state(opt, count, mu, nu):
    s = opt[0]
    return (s._replace(count=jnp.asarray(count, s.count.dtype), mu=mu, nu=nu),) + tuple(opt[1:])


def random_adam(opt, rng, count, mu_scale, nu_scale):
    """Adam moments as after `count` earlier steps (float32), on the scale of the gradients."""
    s = opt[0]
    mu = jax.tree.map(lambda x: jnp.asarray(mu_scale * rng.normal(size=x.shape), jnp.float32), s.mu)
    nu = jax.tree.map(lambda x: jnp.asarray(nu_scale * rng.uniform(0.5, 2.0, x.shape), jnp.float32), s.nu)
    return with_adam_state(opt, count, mu, nu)


def assert_tree_close(actual, expected, msg, base=None, rtol=1e-4, atol=1e-6):
    """|actual - expected| <= atol + rtol |expected| leaf by leaf; `atol` may be a tree of
    per-entry tolerances. With `base`, the changes (x - base) are compared instead."""
    got = jax.tree_util.tree_flatten_with_path(to64(actual))[0]
    want = jax.tree_util.tree_flatten_with_path(expected)[0]
    assert [p for p, _ in got] == [p for p, _ in want], f"{msg}: structures differ"
    bases = [None] * len(got) if base is None else jax.tree.leaves(base)
    atols = jax.tree.leaves(atol) if isinstance(atol, dict) else [atol] * len(got)
    assert len(bases) == len(atols) == len(got), msg
    for (path, a), (_, e), b, tol in zip(got, want, bases, atols):
        if b is not None:
            a, e = a - b, e - b
        err = np.abs(a - e)
        bad = ~(err <= tol + rtol * np.abs(e))
        if np.any(bad):
            i = np.unravel_index(np.argmax(np.where(bad, err, -1)), bad.shape)
            raise AssertionError(
                f"{msg} at {jax.tree_util.keystr(path)}{' (change)' if b is not None else ''}: "
                f"{int(bad.sum())}/{bad.size} entries off, e.g. [{i}] {a[i]!r} vs {e[i]!r} "
                f"(atol {np.broadcast_to(tol, bad.shape)[i]:.3g}, rtol {rtol})")


def tree_max_abs_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(to64(a)), jax.tree.leaves(to64(b))))


def assert_tree_equal(a, b, msg):
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"{msg} at {jax.tree_util.keystr(path)}")


# ------------------------------------------------------------------ NumPy networks
def np_layer_norm(x, gamma, beta, eps=1e-6):
    centred = x - x.mean(-1, keepdims=True)
    std = np.sqrt((centred**2).sum(-1, keepdims=True) / (x.shape[-1] - 1))
    return gamma * centred / (std + eps) + beta


def np_elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


def np_actor(p, s):
    h = s
    i = 1
    while f"w_l{i}" in p:
        h = h @ p[f"w_l{i}"]["kernel"] + p[f"w_l{i}"]["bias"]
        h = np.tanh(np_layer_norm(h, p[f"lnorm{i}"]["gamma"], p[f"lnorm{i}"]["beta"]))
        i += 1
    return np.tanh(h @ p["w_out"]["kernel"] + p["w_out"]["bias"])


def np_critic(p, s, a):
    hs = np_elu(s @ p["w_state_l1"]["kernel"] + p["w_state_l1"]["bias"])
    ha = np_elu(a @ p["w_action_l1"]["kernel"] + p["w_action_l1"]["bias"])
    h = np.concatenate([hs, ha], axis=-1) @ p["w_l2"]["kernel"] + p["w_l2"]["bias"]
    h = np_elu(np_layer_norm(h, p["lnorm2"]["gamma"], p["lnorm2"]["beta"]))
    return (h @ p["w_out"]["kernel"] + p["w_out"]["bias"])[..., 0]


def twin_member(p, k):
    return jax.tree.map(lambda x: x[k], p["critics"])


def np_q(p, s, a, twin):
    """[B] for a single critic, [2, B] for twin critics."""
    if twin:
        return np.stack([np_critic(twin_member(p, k), s, a) for k in range(2)])
    return np_critic(p, s, a)


def np_q1(p, s, a, twin):
    return np_critic(twin_member(p, 0) if twin else p, s, a)


# ------------------------------------------------------------- NumPy optimisation
def fd_grad(f, tree, h=1e-6):
    """Central finite differences of scalar f w.r.t. every entry of the float64 tree."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    leaves = [np.array(x, np.float64, copy=True) for x in leaves]
    grads = []
    for leaf in leaves:
        flat = leaf.reshape(-1)  # a view: writes go into the leaf
        g = np.zeros(flat.size)
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + h
            fp = f(treedef.unflatten(leaves))
            flat[j] = orig - h
            fm = f(treedef.unflatten(leaves))
            flat[j] = orig
            g[j] = (fp - fm) / (2 * h)
        grads.append(g.reshape(leaf.shape))
    return treedef.unflatten(grads)


def ref_global_norm(tree):
    return float(np.sqrt(sum(np.sum(x**2) for x in jax.tree.leaves(tree))))


def ref_clip(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_: multiply by max_norm / (norm + 1e-6) if that is < 1."""
    norm = ref_global_norm(grads)
    scale = min(1.0, max_norm / (norm + 1e-6))
    return jax.tree.map(lambda g: g * scale, grads), norm


def ref_adam(params, grads, opt, lr):
    count, mu, nu = opt
    t = count + 1
    mu = jax.tree.map(lambda m, g: ADAM_B1 * m + (1 - ADAM_B1) * g, mu, grads)
    nu = jax.tree.map(lambda v, g: ADAM_B2 * v + (1 - ADAM_B2) * g * g, nu, grads)
    new = jax.tree.map(
        lambda p, m, v: p - lr * (m / (1 - ADAM_B1**t)) / (np.sqrt(v / (1 - ADAM_B2**t)) + ADAM_EPS),
        params, mu, nu)
    return new, (t, mu, nu)


def adam_sensitivity(params, grads, opt, lr, rel=1e-4):
    """How far each Adam update moves if every gradient entry is off by rel * max|g| (the
    accuracy of float32 gradients). Large only where |g| is tiny on a fresh Adam state, where
    g / (|g| + eps) is ill-conditioned; used as a per-entry tolerance."""
    delta = rel * max(float(np.max(np.abs(g))) for g in jax.tree.leaves(grads))
    base, _ = ref_adam(params, grads, opt, lr)
    up, _ = ref_adam(params, jax.tree.map(lambda g: g + delta, grads), opt, lr)
    down, _ = ref_adam(params, jax.tree.map(lambda g: g - delta, grads), opt, lr)
    return jax.tree.map(lambda b, u, d: np.maximum(np.abs(u - b), np.abs(d - b)), base, up, down)


def ref_soft(target, online, tau):
    return jax.tree.map(lambda t, o: (1 - tau) * t + tau * o, target, online)


def ref_target(p, batch, cfg, twin=False, noise=None, bootstrap=False, clip_noise=True):
    """y = r + gamma (1 - terminal) Q'(s', a'), with TD3 smoothing/min when `twin`."""
    next_a = np_actor(p["actor_target"], batch["next_state"])
    if twin and noise is not None:
        n = np.clip(noise, -cfg.noise_clip, cfg.noise_clip) if clip_noise else noise
        next_a = np.clip(next_a + n, -1.0, 1.0)
    next_q = np_q(p["critic_target"], batch["next_state"], next_a, twin)
    if twin:
        next_q = next_q.min(axis=0)
    terminal = batch["done"] * (1 - batch["truncated"]) if bootstrap else batch["done"]
    return batch["reward"] + cfg.gamma * (1 - terminal) * next_q


def ref_step(p, opt, batch, cfg, twin=False, actor_step=True, noise=None, bootstrap=False,
             clip=True, updated_critic=True):
    """One float64 DDPG/TD3 step. p: dict of the four nets; opt: {'actor','critic'}: (count, mu, nu)."""
    s, a = batch["state"], batch["action"]
    y = ref_target(p, batch, cfg, twin, noise, bootstrap)

    def critic_loss(cp):
        return float(np.sum(np.mean((np_q(cp, s, a, twin) - y) ** 2, axis=-1)))

    g = fd_grad(critic_loss, p["critic"])
    critic_norm = ref_global_norm(g)
    if clip:
        g, _ = ref_clip(g, cfg.grad_clip_norm)
    critic, critic_opt = ref_adam(p["critic"], g, opt["critic"], cfg.critic_lr)
    out = dict(p, critic=critic)
    new_opt = dict(opt, critic=critic_opt)
    info = dict(y=y, critic_loss=critic_loss(p["critic"]), critic_norm=critic_norm, actor_loss=np.nan,
                tol=dict(critic=adam_sensitivity(p["critic"], g, opt["critic"], cfg.critic_lr)))
    if actor_step:
        q_net = critic if updated_critic else p["critic"]

        def actor_loss(ap):
            return -float(np.mean(np_q1(q_net, s, np_actor(ap, s), twin)))

        g = fd_grad(actor_loss, p["actor"])
        info["actor_norm"] = ref_global_norm(g)
        info["actor_loss"] = actor_loss(p["actor"])
        if clip:
            g, _ = ref_clip(g, cfg.grad_clip_norm)
        actor, actor_opt = ref_adam(p["actor"], g, opt["actor"], cfg.actor_lr)
        info["tol"]["actor"] = adam_sensitivity(p["actor"], g, opt["actor"], cfg.actor_lr)
        for name in ("actor", "critic"):
            info["tol"][f"{name}_target"] = jax.tree.map(lambda t: cfg.tau * t, info["tol"][name])
        out.update(actor=actor,
                   actor_target=ref_soft(p["actor_target"], actor, cfg.tau),
                   critic_target=ref_soft(p["critic_target"], critic, cfg.tau))
        new_opt["actor"] = actor_opt
    return out, new_opt, info


NETS = ("actor", "critic", "actor_target", "critic_target")


def state_params64(state):
    return {name: to64(getattr(state, name)) for name in NETS}


def state_opt64(state):
    return {"actor": adam_state(state.actor_opt), "critic": adam_state(state.critic_opt)}


def batch64(batch):
    return {k: np.asarray(getattr(batch, k), np.float64)
            for k in ("state", "action", "next_state", "reward", "done", "truncated")}


def check_step(new_state, ref_params, ref_opt, base_params, msg, tol, nets=NETS):
    """Updated nets (their changes to 1e-3 relative, and their values) and Adam states."""
    for name in nets:
        atol = jax.tree.map(lambda t: 1e-6 + 2 * t, tol[name])
        assert_tree_close(getattr(new_state, name), ref_params[name], f"{msg}: {name}", base=base_params[name],
                          rtol=1e-3, atol=atol)
        assert_tree_close(getattr(new_state, name), ref_params[name], f"{msg}: {name}", rtol=1e-4, atol=atol)
    for name in ("actor", "critic"):
        count, mu, nu = adam_state(getattr(new_state, f"{name}_opt"))
        ref_count, ref_mu, ref_nu = ref_opt[name]
        assert count == ref_count, f"{msg}: {name} Adam count {count} != {ref_count}"
        # float32 gradients are accurate relative to the largest entries, not entrywise.
        mu_scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(ref_mu))
        nu_scale = max(float(np.max(np.abs(x))) for x in jax.tree.leaves(ref_nu))
        assert_tree_close(mu, ref_mu, f"{msg}: {name} Adam mu", rtol=1e-4, atol=1e-4 * mu_scale)
        assert_tree_close(nu, ref_nu, f"{msg}: {name} Adam nu", rtol=1e-3, atol=2e-4 * nu_scale)


# ------------------------------------------------------------ compiled learners
# Compilation dominates the run time on a small CPU, so every learner variant is built and
# jitted once; tests pass their hyperparameters as the `config` argument (float fields are
# pytree leaves, so other values do not recompile).
TRAIN_STATIC = dict(batch_size=B, learning_starts=7)


def compiled(algorithm="ddpg", bootstrap_on_timeout=False, exploration="ou"):
    return _compiled(algorithm, bootstrap_on_timeout, exploration)  # one cache key per variant


@functools.cache
def _compiled(algorithm, bootstrap_on_timeout, exploration):
    config = LearnerConfig(algorithm=algorithm, bootstrap_on_timeout=bootstrap_on_timeout, exploration=exploration,
                           **TRAIN_STATIC)
    learner = Learner(OBS, ACT, config, SMALL)
    return SimpleNamespace(
        learner=learner,
        config=config,
        step=jax.jit(learner.step),
        target=jax.jit(learner.critic_target),
        train_int=jax.jit(learner.train, static_argnums=3),
        train=jax.jit(learner.train),
        explore=jax.jit(learner.explore),
    )


def hyper(c, **kw):
    """The compiled learner's config with other hyperparameter values (same static fields)."""
    return c.config.replace(**{**BIG_STEPS, **kw})


# ============================================================================ DDPG
def test_ddpg_step_matches_reference_without_clipping():
    """First step from fresh Adam, clipping inactive, timeouts stored as terminal (default)."""
    rng, seed = new_rng()
    msg = f"seed={seed}"
    c = compiled()
    cfg = hyper(c, grad_clip_norm=1e6)
    state = random_state(c.learner, rng)
    batch = random_batch(rng)
    p, opt, b = state_params64(state), state_opt64(state), batch64(batch)

    new_state, metrics = c.step(state, batch, jax_key(rng), cfg)
    ref_params, ref_opt, info = ref_step(p, opt, b, cfg)

    assert info["critic_norm"] < cfg.grad_clip_norm and info["actor_norm"] < cfg.grad_clip_norm, msg
    check_step(new_state, ref_params, ref_opt, p, msg, info["tol"])
    assert int(new_state.num_updates) == 1, msg
    np.testing.assert_allclose(float(metrics.critic_loss), info["critic_loss"], rtol=1e-5, err_msg=msg)
    np.testing.assert_allclose(float(metrics.actor_loss), info["actor_loss"], rtol=1e-5, atol=1e-5, err_msg=msg)
    # The exploration noise state is not touched by a gradient step.
    assert_tree_equal(new_state.noise, state.noise, msg)


def test_ddpg_step_matches_reference_with_active_clipping_and_adam_history():
    """Adam moments mid-run (bias correction at t = 4) and a small max norm: clipping matters."""
    rng, seed = new_rng()
    msg = f"seed={seed}"
    c = compiled()
    cfg = hyper(c, grad_clip_norm=0.05)
    for _ in range(20):  # draw until both gradient norms are well above the clip
        state = random_state(c.learner, rng)
        # Moments on the scale of the clipped gradients (~0.05 / sqrt(#params) per entry).
        state = state.replace(actor_opt=random_adam(state.actor_opt, rng, 3, 1e-3, 1e-6),
                              critic_opt=random_adam(state.critic_opt, rng, 3, 1e-3, 1e-6),
                              num_updates=jnp.asarray(3, jnp.int32))
        batch = random_batch(rng)
        p, opt, b = state_params64(state), state_opt64(state), batch64(batch)
        ref_params, ref_opt, info = ref_step(p, opt, b, cfg)
        if min(info["critic_norm"], info["actor_norm"]) > 2 * cfg.grad_clip_norm:
            break
    else:
        raise AssertionError(f"{msg}: could not draw gradients large enough to be clipped")

    new_state, metrics = c.step(state, batch, jax_key(rng), cfg)
    check_step(new_state, ref_params, ref_opt, p, msg, info["tol"])
    assert int(new_state.num_updates) == 4, msg
    np.testing.assert_allclose(float(metrics.critic_loss), info["critic_loss"], rtol=1e-5, err_msg=msg)
    np.testing.assert_allclose(float(metrics.actor_loss), info["actor_loss"], rtol=1e-5, atol=1e-5, err_msg=msg)

    # The comparison is sharp enough to notice a missing clip or an actor trained on the
    # pre-update critic: the reference with either change would fail it.
    no_clip, no_clip_opt, no_clip_info = ref_step(p, opt, b, cfg, clip=False)
    with pytest.raises(AssertionError):
        check_step(new_state, no_clip, no_clip_opt, p, msg, no_clip_info["tol"], nets=("critic",))
    with pytest.raises(AssertionError):
        check_step(new_state, no_clip, no_clip_opt, p, msg, no_clip_info["tol"], nets=("actor",))
    stale, stale_opt, stale_info = ref_step(p, opt, b, cfg, updated_critic=False)
    with pytest.raises(AssertionError):
        check_step(new_state, stale, stale_opt, p, msg, stale_info["tol"], nets=("actor",))


def test_official_sizes_init_and_training_progress():
    rng, seed = new_rng()
    msg = f"seed={seed}"
    learner = Learner(17, 6)  # official config: 128-128 actor, 200/300 critic, batch 128
    state = jax.jit(learner.init)(jax_key(rng))
    # Targets start as hard copies; noise at 0; nothing done yet.
    assert_tree_equal(state.actor_target, state.actor, msg)
    assert_tree_equal(state.critic_target, state.critic, msg)
    assert not np.any(np.asarray(state.noise)) and int(state.num_updates) == 0, msg
    batch = random_batch(rng, n=128, obs=17, act=6)
    key = jax_key(rng)

    @jax.jit
    def run(state):
        return lax.scan(lambda s, _: learner.step(s, batch, key, LearnerConfig()), state, None, length=50)

    new_state, metrics = run(state)
    losses = np.stack([np.asarray(metrics.critic_loss), np.asarray(metrics.actor_loss)], axis=1)
    assert np.all(np.isfinite(losses)), msg
    assert losses[-1, 0] < 0.7 * losses[0, 0], f"{msg}: critic loss {losses[0, 0]} -> {losses[-1, 0]}"
    assert int(new_state.num_updates) == 50, msg
    # Targets moved off the online nets' initial copy, but only slowly (tau = 0.001).
    moved = tree_max_abs_diff(new_state.actor_target, state.actor_target)
    assert 0 < moved < tree_max_abs_diff(new_state.actor, state.actor), msg


# ============================================================================== TD3
def test_td3_step_and_policy_delay_match_reference():
    rng, seed = new_rng()
    msg = f"seed={seed}"
    c = compiled("td3")
    assert c.config.policy_delay == 2
    cfg = hyper(c, policy_noise=0.0, grad_clip_norm=0.5)  # no smoothing: exact comparison
    # Draw until the min over the twins is informative: on some live rows each twin is the smaller.
    for _ in range(100):
        state, batch = random_state(c.learner, rng), random_batch(rng)
        p, b = state_params64(state), batch64(batch)
        next_a = np_actor(p["actor_target"], b["next_state"])
        q_next = np_q(p["critic_target"], b["next_state"], next_a, twin=True)[:, b["done"] == 0]
        if np.any(q_next[0] < q_next[1] - 1e-3) and np.any(q_next[1] < q_next[0] - 1e-3):
            break
    else:
        raise AssertionError(f"{msg}: could not draw an informative batch")
    assert all(x.shape[0] == 2 for x in jax.tree.leaves(state.critic)), "twin critics stack on axis 0"
    state = state.replace(actor_opt=random_adam(state.actor_opt, rng, 2, 1e-2, 1e-4),
                          critic_opt=random_adam(state.critic_opt, rng, 2, 1e-2, 1e-4))
    zero_noise = np.zeros((B, ACT))
    # As in the reference TD3 (sfujim), the actor moves on every policy_delay-th update counting
    # from 1: with delay 2 the updates numbered 0, 1, 2 are critic-only, actor, critic-only.
    s0, _ = c.step(state, batch, jax_key(rng), cfg)
    assert_tree_equal(s0.actor, state.actor, f"{msg}: the first TD3 update must not move the actor")
    state = state.replace(num_updates=jnp.asarray(1, jnp.int32))

    # num_updates = 1: critics, actor and both targets move.
    p, opt = state_params64(state), state_opt64(state)
    s1, m1 = c.step(state, batch, jax_key(rng), cfg)
    ref1, ref_opt1, info1 = ref_step(p, opt, b, cfg, twin=True, noise=zero_noise)
    check_step(s1, ref1, ref_opt1, p, f"{msg} (num_updates=1)", info1["tol"])
    np.testing.assert_allclose(float(m1.critic_loss), info1["critic_loss"], rtol=1e-5, err_msg=msg)
    np.testing.assert_allclose(float(m1.actor_loss), info1["actor_loss"], rtol=1e-5, atol=1e-5, err_msg=msg)

    # num_updates = 2: only the critics (and their optimiser) move.
    p1, opt1 = state_params64(s1), state_opt64(s1)
    s2, m2 = c.step(s1, batch, jax_key(rng), cfg)
    ref2, ref_opt2, info2 = ref_step(p1, opt1, b, cfg, twin=True, noise=zero_noise, actor_step=False)
    check_step(s2, ref2, ref_opt2, p1, f"{msg} (num_updates=2)", info2["tol"], nets=("critic",))
    for name in ("actor", "actor_target", "critic_target", "actor_opt"):
        assert_tree_equal(getattr(s2, name), getattr(s1, name), f"{msg}: {name} changed on a delayed step")
    assert tree_max_abs_diff(s2.critic, s1.critic) > 1e-3, msg
    assert np.isnan(float(m2.actor_loss)), msg
    np.testing.assert_allclose(float(m2.critic_loss), info2["critic_loss"], rtol=1e-5, err_msg=msg)

    # num_updates = 3: the actor moves again.
    s3, m3 = c.step(s2, batch, jax_key(rng), cfg)
    assert tree_max_abs_diff(s3.actor, s2.actor) > 1e-3 and np.isfinite(float(m3.actor_loss)), msg
    assert [int(s.num_updates) for s in (s1, s2, s3)] == [2, 3, 4], msg


def test_td3_target_smoothing_noise_is_clipped():
    rng, seed = new_rng()
    msg = f"seed={seed}"
    c = compiled("td3")
    cfg = hyper(c, policy_noise=0.5, noise_clip=0.1, grad_clip_norm=1e6)
    # Draw until both clips matter: noise beyond +-noise_clip on unsaturated entries, and
    # smoothed actions beyond +-1 (the target actor is pushed towards saturation for that).
    for _ in range(100):
        state = random_state(c.learner, rng)
        actor_target = dict(state.actor_target)
        actor_target["w_out"] = {"kernel": 3.0 * actor_target["w_out"]["kernel"],
                                 "bias": actor_target["w_out"]["bias"]}
        state = state.replace(actor_target=actor_target)
        batch = random_batch(rng)
        b, p, opt = batch64(batch), state_params64(state), state_opt64(state)
        key = jax_key(rng)
        noise = cfg.policy_noise * np.asarray(jax.random.normal(key, (B, ACT)), np.float64)
        mu_next = np_actor(p["actor_target"], b["next_state"])
        clipped = mu_next + np.clip(noise, -cfg.noise_clip, cfg.noise_clip)
        live = (b["done"] == 0)[:, None]
        if (np.any(live & (np.abs(noise) > cfg.noise_clip) & (np.abs(clipped) < 0.99))
                and np.any(live & (np.abs(clipped) > 1))):
            break
    else:
        raise AssertionError(f"{msg}: could not draw a batch that exercises both clips")

    y = np.asarray(c.target(state, batch, key, cfg), np.float64)
    expected = ref_target(p, b, cfg, twin=True, noise=noise)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5, err_msg=msg)
    unclipped = ref_target(p, b, cfg, twin=True, noise=noise, clip_noise=False)
    assert np.max(np.abs(unclipped - expected)) > 1e-3, f"{msg}: noise clipping makes no difference here"

    # The whole step draws the same noise from the key it is given (an actor-update step).
    state = state.replace(num_updates=jnp.asarray(1, jnp.int32))
    new_state, _ = c.step(state, batch, key, cfg)
    ref_params, ref_opt, info = ref_step(p, opt, b, cfg, twin=True, noise=noise)
    check_step(new_state, ref_params, ref_opt, p, msg, info["tol"])


# ============================================================= timeouts / bootstrap
def test_bootstrap_on_timeout():
    rng, seed = new_rng()
    msg = f"seed={seed}"
    done = np.array([1, 1, 0, 0, 1, 1, 0, 1], np.float64)
    truncated = np.array([1, 0, 0, 0, 1, 0, 0, 1], np.float64)
    official, bootstrapping = compiled(), compiled(bootstrap_on_timeout=True)
    key = jax_key(rng)
    gamma = 0.9
    for _ in range(20):  # draw until gamma Q' is visible on every timeout row
        perm = rng.permutation(B)
        batch = random_batch(rng).replace(done=jnp.asarray(done[perm], jnp.float32),
                                          truncated=jnp.asarray(truncated[perm], jnp.float32))
        b = batch64(batch)
        state = random_state(official.learner, rng)
        p = state_params64(state)
        next_q = np_critic(p["critic_target"], b["next_state"], np_actor(p["actor_target"], b["next_state"]))
        timeout = (b["done"] == 1) & (b["truncated"] == 1)
        if np.all(np.abs(next_q[timeout]) > 1e-2):
            break
    else:
        raise AssertionError(f"{msg}: Q' too small to tell the cases apart")

    y_default = np.asarray(official.target(state, batch, key, hyper(official, gamma=gamma)), np.float64)
    np.testing.assert_allclose(y_default, b["reward"] + gamma * (1 - b["done"]) * next_q, rtol=1e-5, atol=1e-6,
                               err_msg=f"{msg}: default must treat every done (incl. timeouts) as terminal")
    np.testing.assert_allclose(y_default[b["done"] == 1], b["reward"][b["done"] == 1], rtol=0, atol=1e-7,
                               err_msg=msg)

    y_boot = np.asarray(bootstrapping.target(state, batch, key, hyper(bootstrapping, gamma=gamma)), np.float64)
    terminal = b["done"] * (1 - b["truncated"])
    np.testing.assert_allclose(y_boot, b["reward"] + gamma * (1 - terminal) * next_q, rtol=1e-5, atol=1e-6,
                               err_msg=f"{msg}: bootstrap_on_timeout must bootstrap through truncations")
    np.testing.assert_allclose(y_boot[~timeout], y_default[~timeout], rtol=1e-6, atol=1e-7, err_msg=msg)


# ============================================================================ train
CAPACITY = 64


def make_replay(rng, count):
    """A replay buffer (capacity 64) holding `count` random transitions in slots 0..count-1."""
    items = random_batch(rng, n=count)
    data = jax.tree.map(lambda x: jnp.zeros((CAPACITY,) + x.shape[1:], x.dtype).at[:count].set(x), items)
    return RingBuffer(data=data, position=jnp.asarray(count % CAPACITY, jnp.int32),
                      size=jnp.asarray(count, jnp.int32)), items


def test_train_is_a_noop_until_replay_exceeds_learning_starts():
    rng, seed = new_rng()
    msg = f"seed={seed}"
    c = compiled()
    assert c.config.learning_starts == 7
    cfg = hyper(c)
    state = random_state(c.learner, rng)
    replay, _ = make_replay(rng, 7)  # size 7 == learning_starts: no update yet
    key = jax_key(rng)
    for train, num_steps in ((c.train_int, 3), (c.train, jnp.asarray(3, jnp.int32))):
        new_state, metrics = train(state, replay, key, num_steps, cfg)
        assert_tree_equal(new_state, state, f"{msg}: state changed with num_steps={num_steps!r}")
        assert np.isnan(float(metrics.critic_loss)) and np.isnan(float(metrics.actor_loss)), msg


def test_train_runs_n_steps_on_sampled_batches():
    """With replay size == batch size every sample is a permutation of the whole buffer, and a
    DDPG step is invariant to the order of its batch: N train steps == N steps on all the data."""
    rng, seed = new_rng()
    msg = f"seed={seed}"
    c = compiled()
    cfg = hyper(c)
    state = random_state(c.learner, rng)
    replay, items = make_replay(rng, B)  # size 8 > learning_starts = 7
    key = jax_key(rng)

    expected, losses = state, []
    for _ in range(3):
        expected, m = c.step(expected, items, key, cfg)
        losses.append((float(m.critic_loss), float(m.actor_loss)))
    mean_losses = np.mean(losses, axis=0)

    for how, train, num_steps in (("int", c.train_int, 3), ("traced", c.train, jnp.asarray(3, jnp.int32))):
        got, metrics = train(state, replay, key, num_steps, cfg)
        assert int(got.num_updates) == int(state.num_updates) + 3, f"{msg} {how}"
        for name in NETS:
            assert_tree_close(getattr(got, name), to64(getattr(expected, name)), f"{msg}: {how} count {name}",
                              rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose([float(metrics.critic_loss), float(metrics.actor_loss)], mean_losses,
                                   rtol=1e-4, atol=1e-6, err_msg=f"{msg} {how}: metrics are means over steps")

    # A traced count: the same compiled function runs any number of steps.
    for n in (1, 5, 0):
        got, metrics = c.train(state, replay, key, jnp.asarray(n, jnp.int32), cfg)
        assert int(got.num_updates) == int(state.num_updates) + n, f"{msg} n={n}"
        if n:
            assert tree_max_abs_diff(got.actor, state.actor) > 1e-4, f"{msg} n={n}"
            assert np.isfinite(float(metrics.critic_loss)) and np.isfinite(float(metrics.actor_loss)), msg
        else:
            assert_tree_equal(got, state, f"{msg}: zero steps")


def test_train_on_larger_replay_ddpg_and_td3():
    rng, seed = new_rng()
    msg = f"seed={seed}"
    replay, _ = make_replay(rng, 40)
    runs = [("ddpg", "int", 3), ("ddpg", "traced", 3), ("td3", "traced", 3)]
    for algorithm, how, n in runs:
        c = compiled(algorithm)
        state = random_state(c.learner, rng)
        train, num_steps = (c.train_int, n) if how == "int" else (c.train, jnp.asarray(n, jnp.int32))
        new_state, metrics = train(state, replay, jax_key(rng), num_steps, hyper(c))
        where = f"{msg} {algorithm} {how}"
        assert int(new_state.num_updates) == n, where
        for name in NETS:
            assert tree_max_abs_diff(getattr(new_state, name), getattr(state, name)) > 1e-4, f"{where}: {name}"
        assert np.isfinite(float(metrics.critic_loss)), where
        # TD3: NaN on the delayed steps, so the mean is over the actor steps only.
        assert np.isfinite(float(metrics.actor_loss)), where
        assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(new_state)), where


# ============================================================================ noise
def test_ou_noise_step_matches_formula():
    rng, seed = new_rng()
    msg = f"seed={seed}"
    step = jax.jit(ou_noise_step)
    for cfg in (LearnerConfig(), LearnerConfig(ou_theta=0.4, ou_sigma=0.7, ou_scale=2.5)):
        x = np.asarray(rng.normal(size=ACT), np.float32)
        key = jax_key(rng)
        noise, new = step(key, jnp.asarray(x), cfg)
        z = np.asarray(jax.random.normal(key, x.shape), np.float64)
        x = x.astype(np.float64)
        expected = x + cfg.ou_theta * (0.0 - x) + cfg.ou_sigma * z
        np.testing.assert_allclose(np.asarray(new), expected, rtol=1e-5, atol=1e-6, err_msg=msg)
        np.testing.assert_allclose(np.asarray(noise), cfg.ou_scale * expected, rtol=1e-5, atol=1e-6, err_msg=msg)


def test_ou_noise_stationary_statistics():
    rng, seed = new_rng()
    msg = f"seed={seed}"
    cfg = LearnerConfig()
    steps, dim, burn_in = 20000, 6, 200

    @jax.jit
    def simulate(key):
        def body(x, k):
            noise, x = ou_noise_step(k, x, cfg)
            return x, noise
        return lax.scan(body, jnp.zeros((dim,), jnp.float32), jax.random.split(key, steps))[1]

    noise = np.asarray(simulate(jax_key(rng)), np.float64)[burn_in:]
    expected_std = 0.3 * 0.2 / np.sqrt(1 - 0.85**2)  # 0.1139
    std = noise.std()
    assert abs(std / expected_std - 1) < 0.1, f"{msg}: stationary std {std:.4f} vs {expected_std:.4f}"
    assert abs(noise.mean()) < 0.01, f"{msg}: mean {noise.mean():.4f}"
    lag1 = np.mean([np.corrcoef(noise[:-1, i], noise[1:, i])[0, 1] for i in range(dim)])
    assert abs(lag1 - 0.85) < 0.03, f"{msg}: lag-1 autocorrelation {lag1:.3f} vs 0.85"


def test_explore_clips_actions_and_never_resets_noise():
    rng, seed = new_rng()
    msg = f"seed={seed}"
    c = compiled()
    cfg = c.config
    state = random_state(c.learner, rng)
    state = state.replace(noise=jnp.asarray([8.0, -8.0], jnp.float32))  # drives actions past +-1
    actor = to64(state.actor)
    x = np.asarray(state.noise, np.float64)
    saw_clip = saw_inside = False
    for t in range(25):
        obs = np.asarray(rng.normal(size=OBS), np.float32)
        key = jax_key(rng)
        action, state = c.explore(state, jnp.asarray(obs), key, cfg)
        z = np.asarray(jax.random.normal(key, (ACT,)), np.float64)
        x = x + cfg.ou_theta * (0.0 - x) + cfg.ou_sigma * z
        raw = np_actor(actor, obs.astype(np.float64)) + cfg.ou_scale * x
        action = np.asarray(action, np.float64)
        assert np.all(np.abs(action) <= 1.0), f"{msg} step {t}: {action}"
        np.testing.assert_allclose(action, np.clip(raw, -1, 1), rtol=1e-4, atol=1e-5, err_msg=f"{msg} step {t}")
        np.testing.assert_allclose(np.asarray(state.noise), x, rtol=1e-4, atol=1e-5,
                                   err_msg=f"{msg} step {t}: the OU state must carry over")
        saw_clip |= bool(np.any(np.abs(raw) > 1))
        saw_inside |= bool(np.any(np.abs(raw) < 0.99))
    assert saw_clip and saw_inside, msg

    # Gaussian exploration leaves the noise state alone and adds std * N(0, 1).
    g = compiled(exploration="gaussian")
    obs, key = np.asarray(rng.normal(size=OBS), np.float32), jax_key(rng)
    action, new_state = g.explore(state, jnp.asarray(obs), key, hyper(g, gaussian_noise_std=0.3))
    assert_tree_equal(new_state.noise, state.noise, msg)
    raw = np_actor(actor, obs.astype(np.float64)) + 0.3 * np.asarray(jax.random.normal(key, (ACT,)), np.float64)
    np.testing.assert_allclose(np.asarray(action), np.clip(raw, -1, 1), rtol=1e-4, atol=1e-5, err_msg=msg)
