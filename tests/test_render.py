"""render_episode: brax HTML viewer, native MuJoCo GIF frames and return, format errors."""

import base64
import json
import re
import sys
import zlib

import gymnasium as gym
import imageio.v3 as iio
import jax
import numpy as np
import pytest

from pderl_jax.config import ConfigError, load_config
from pderl_jax.envs import make_environment
from pderl_jax.networks import init_actor
from pderl_jax.envs.render import headless_gl, render_episode
from pderl_jax.training import Trainer


def policy_for(task, backend, episode_length):
    env = make_environment(task, backend, episode_length=episode_length)
    trainer = Trainer(load_config(task), env)
    return env, trainer.apply_actor, init_actor(jax.random.key(0), trainer.actor, env.obs_dim)


@pytest.fixture(scope="module")
def brax_hopper():
    return policy_for("hopper", "brax", 1000)


@pytest.fixture(scope="module")
def cheetah():
    return policy_for("halfcheetah", "native", 20)


@pytest.fixture(scope="module")
def gl():
    """Skip frame tests only where no headless OpenGL exists: try a tiny mujoco.Renderer."""
    try:
        headless_gl()
        import mujoco

        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='.1'/></worldbody></mujoco>")
        with mujoco.Renderer(model, 8, 8) as renderer:
            renderer.update_scene(mujoco.MjData(model))
            renderer.render()
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"no headless OpenGL for mujoco.Renderer (MUJOCO_GL egl/osmesa): {error}")


def test_brax_episode_is_written_as_the_brax_viewer(brax_hopper, tmp_path):
    env, apply_actor, params = brax_hopper
    out = render_episode(env, apply_actor, params, tmp_path / "hopper.html", max_steps=30)
    html = (tmp_path / "hopper.html").read_text()
    assert out["format"] == "html" and out["path"] == str(tmp_path / "hopper.html")
    assert 'id="brax-viewer"' in html and "new Viewer(" in html
    # the embedded trajectory holds one state per rendered step; a random hopper may fall early
    system = json.loads(zlib.decompress(base64.b64decode(re.search(r'var system = "([^"]+)"', html).group(1))))
    assert 1 <= out["frames"] <= 30 and len(system["states"]["x"]) == out["frames"]
    assert np.isfinite(out["return"])


def test_mujoco_gif_frames_and_return_match_gymnasium_by_hand(cheetah, gl, tmp_path):
    env, apply_actor, params = cheetah  # episode_length 20 ends the (never terminating) episode
    out = render_episode(env, apply_actor, params, tmp_path / "cheetah.gif", seed=3, width=64, height=48)
    frames = iio.imread(tmp_path / "cheetah.gif", index=None)
    assert out["format"] == "gif" and out["frames"] == 20
    assert frames.shape[:3] == (20, 48, 64) and frames.std() > 0

    reference = gym.make("HalfCheetah-v5")
    obs, _ = reference.reset(seed=3)
    policy, total = jax.jit(apply_actor), 0.0
    for _ in range(20):
        obs, reward, terminated, _, _ = reference.step(np.asarray(policy(params, obs.astype(np.float32)), np.float64))
        total += reward
    assert out["return"] == pytest.approx(total, rel=1e-6)


def test_max_steps_cuts_the_episode(cheetah, gl, tmp_path):
    env, apply_actor, params = cheetah
    out = render_episode(env, apply_actor, params, tmp_path / "short.gif", max_steps=5, width=32, height=24)
    assert out["frames"] == 5 and iio.imread(tmp_path / "short.gif", index=None).shape[:3] == (5, 24, 32)


def test_unsupported_paths_raise_config_errors(brax_hopper, cheetah, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"\.html, \.gif, \.mp4"):
        render_episode(*brax_hopper, tmp_path / "hopper.txt")
    with pytest.raises(ConfigError, match="brax"):
        render_episode(*cheetah, tmp_path / "cheetah.html")
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if imageio-ffmpeg were missing
    with pytest.raises(ConfigError, match=r"imageio\[ffmpeg\]"):
        render_episode(*cheetah, tmp_path / "cheetah.mp4")
    assert not list(tmp_path.iterdir())  # nothing was run or written
