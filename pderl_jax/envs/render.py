"""Render one episode of a policy to a file, to look at what an actor does.

brax tasks are written as brax's interactive HTML viewer (or as GIF/MP4 frames); the Gymnasium
v5 tasks (native MuJoCo, or MJX: its states drawn with MuJoCo's renderer) as GIF or MP4.
Frames are drawn offscreen with `mujoco.Renderer`, so no display is needed: MuJoCo's OpenGL
runs through EGL, or through OSMesa where EGL is missing.
"""

from __future__ import annotations

import ctypes.util
import importlib
import os
import sys
from pathlib import Path

# MuJoCo picks its OpenGL backend from MUJOCO_GL once, when first imported, and defaults to glfw,
# which needs a display. Name a headless one instead, but only one whose library exists: a
# missing one would make `import mujoco` itself fail.
for _backend, _library in (("egl", "EGL"), ("osmesa", "OSMesa")):
    if ctypes.util.find_library(_library):
        os.environ.setdefault("MUJOCO_GL", _backend)
        break

import jax
import jax.numpy as jnp
import numpy as np

from pderl_jax.config import ConfigError
from pderl_jax.envs import BraxEnvironment, NativeEnvironment

FORMATS = {"brax": (".html", ".gif", ".mp4"), "native": (".gif", ".mp4"), "mjx": (".gif", ".mp4")}
MAX_GIF_FPS = 50  # GIF delays count 1/100 s, and viewers slow delays under 2/100 s right down

_gl_backend: str | None = None


def headless_gl() -> str:
    """Make `mujoco.Renderer` work without a display; returns the OpenGL backend it uses.

    The backend MuJoCo chose at import is kept when headless (egl, osmesa) and able to make a
    context; otherwise EGL, then OSMesa, is swapped in (the renderer looks its context class up on
    each construction). glfw is never tried: without a display it fails inside MuJoCo, which then
    cannot make any other context. Raises a ConfigError naming MUJOCO_GL when nothing works.
    """
    global _gl_backend
    if _gl_backend is not None:
        return _gl_backend
    import mujoco

    gl_context = importlib.import_module(mujoco.Renderer.__module__).gl_context
    chosen = getattr(gl_context, "_MUJOCO_GL", "")
    candidates = ([chosen] if chosen in ("egl", "osmesa") else []) + ["egl", "osmesa"]
    errors = {}
    for backend in dict.fromkeys(candidates):
        try:
            context_class = gl_context.GLContext if backend == chosen else _load_gl_context(backend)
            context = context_class(8, 8)
            context.make_current()
            context.free()
        except Exception as error:  # noqa: BLE001 - any failure means: try the next backend
            errors[backend] = f"{type(error).__name__}: {error}"
            continue
        gl_context.GLContext = context_class
        _gl_backend = backend
        return backend
    tried = "; ".join(f"MUJOCO_GL={name}: {message}" for name, message in errors.items())
    raise ConfigError("no headless OpenGL for MuJoCo rendering (install EGL, e.g. libegl1, or OSMesa, "
                      f"e.g. libosmesa6, and set MUJOCO_GL=egl or osmesa); tried {tried}")


def _load_gl_context(backend: str):
    """MuJoCo's GLContext class for `backend` ("egl" or "osmesa")."""
    # PyOpenGL binds one platform (PYOPENGL_PLATFORM) on its first import; after a failed
    # backend, forget that binding so the next one can make its own.
    if os.environ.get("PYOPENGL_PLATFORM", backend) != backend:
        del os.environ["PYOPENGL_PLATFORM"]
        for name in [name for name in sys.modules if name == "OpenGL" or name.startswith("OpenGL.")]:
            del sys.modules[name]
    return importlib.import_module(f"mujoco.{backend}").GLContext


def render_episode(env, apply_actor, params, path, seed: int = 0, max_steps: int | None = None,
                   fps: float | None = None, width: int = 320, height: int = 240) -> dict:
    """Run one deterministic episode of `apply_actor(params, obs)` on `env` and write it to `path`.

    The episode starts from `seed` and ends at termination or after `env.episode_length` steps
    (`max_steps` when given). The suffix of `path` picks the format: .html (brax only: brax's
    viewer), .gif, or .mp4 (needs imageio-ffmpeg). There is one frame per step, showing the state
    after it, from a side camera following the robot; `fps` defaults to real time (one frame per
    control step of the env), capped at MAX_GIF_FPS for GIFs.

    Returns {"path", "frames" (steps rendered), "return" (undiscounted), "format"}.
    """
    path = Path(path)
    if isinstance(env, BraxEnvironment):
        kind = "brax"
    elif isinstance(env, NativeEnvironment):
        kind = "native"
    elif env.backend == "mjx":
        kind = "mjx"
    else:
        raise ConfigError(f"cannot render {type(env).__name__}; render_episode takes a brax, mjx or native "
                          "environment")
    fmt = path.suffix.lower()
    if fmt not in FORMATS[kind]:
        hint = " (the .html viewer is brax's)" if fmt == ".html" else ""
        raise ConfigError(f"cannot render {env.description} to {path.name!r}: "
                          f"use a path ending in {', '.join(FORMATS[kind])}{hint}")
    if fmt == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError as error:
            raise ConfigError("writing .mp4 needs imageio-ffmpeg: `pip install 'imageio[ffmpeg]'`, "
                              "or render to .gif") from error
    steps = env.episode_length if max_steps is None else int(max_steps)
    if steps <= 0:
        raise ConfigError(f"max_steps must be positive, got {max_steps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    policy = jax.jit(apply_actor)

    if kind == "brax":
        states, total, dt = _brax_episode(env, policy, params, seed, steps)
        frames = len(states)
        if fmt == ".html":
            from brax.io import html

            path.write_text(html.render(env._env.sys, states, height="100vh", colab=False))
        else:
            _write_video(path, _brax_images(env, states, width, height), fps or 1 / dt)
    else:
        episode = _native_episode if kind == "native" else _mjx_episode
        images, total, dt = episode(env, policy, params, seed, steps, width, height)
        frames = len(images)
        _write_video(path, images, fps or 1 / dt)
    return {"path": str(path), "frames": frames, "return": total, "format": fmt[1:]}


def _compiled_episode(env, policy, params, seed: int, steps: int, keep):
    """One deterministic episode, reset and all `steps` steps in one compilation: `keep(state)` after each
    step (as arrays over time), the return and the length, cut at the first `done`."""

    def episode(params, key):
        def step(state, _):
            state, _, reward, done = env.step(state, policy(params, state.obs))
            return state, (keep(state), reward, done)

        return jax.lax.scan(step, env.reset(key), length=steps)[1]

    kept, rewards, dones = jax.device_get(jax.jit(episode)(params, jax.random.key(seed)))
    length = int(np.argmax(dones)) + 1 if dones.any() else steps
    return kept, float(np.sum(rewards[:length], dtype=np.float64)), length


def _brax_episode(env: BraxEnvironment, policy, params, seed: int, steps: int):
    """The brax pipeline states after each step (what brax's renderers draw), the return and dt."""
    trajectory, total, length = _compiled_episode(env, policy, params, seed, steps,
                                                  lambda state: state.pipeline.pipeline_state)
    if trajectory is None:  # a brax env not built on a physics pipeline
        raise ConfigError(f"{env.description} keeps no pipeline state to render")
    states = [jax.tree.map(lambda x, t=t: x[t], trajectory) for t in range(length)]
    return states, total, float(env._env.dt)


def _brax_images(env: BraxEnvironment, states: list, width: int, height: int) -> list:
    try:
        from brax.io import image
    except ImportError as error:
        raise ConfigError(f"brax.io.image is unavailable here ({error}); render brax tasks to .html") from error
    headless_gl()
    _prepare_model(env._env.sys.mj_model, width, height)
    return image.render_array(env._env.sys, states, height=height, width=width, camera=_tracking_camera())


def _native_episode(env: NativeEnvironment, policy, params, seed: int, steps: int, width: int, height: int):
    """Frames of one episode on a host copy of the task, as `NativeEnvironment` steps it."""
    import mujoco

    headless_gl()
    host = env._make()
    _prepare_model(host.model, width, height)
    renderer, camera = mujoco.Renderer(host.model, height, width), _tracking_camera()
    images, total = [], 0.0
    try:
        obs, _ = host.reset(seed=seed)
        for _ in range(steps):
            action = np.asarray(policy(params, jnp.asarray(obs, jnp.float32)), np.float64)
            obs, reward, terminated, _, _ = host.step(env._action_centre + env._action_half_range * action)
            total += float(reward)
            renderer.update_scene(host.data, camera)
            images.append(renderer.render())
            if terminated:
                break
    finally:
        renderer.close()
        host.close()
    return images, total, float(host.dt)


def _mjx_episode(env, policy, params, seed: int, steps: int, width: int, height: int):
    """Frames of one MJX episode: the episode runs compiled (as training runs it), then each step's
    qpos and qvel are put into the host MuJoCo model of the same XML and drawn."""
    import mujoco

    (qpos, qvel), total, length = _compiled_episode(env, policy, params, seed, steps,
                                                    lambda state: (state.data.qpos, state.data.qvel))
    headless_gl()
    model = env.host_model()
    _prepare_model(model, width, height)
    data = mujoco.MjData(model)
    renderer, camera = mujoco.Renderer(model, height, width), _tracking_camera()
    images = []
    try:
        for t in range(length):
            data.qpos[:], data.qvel[:] = qpos[t], qvel[t]
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera)
            images.append(renderer.render())
    finally:
        renderer.close()
    return images, total, float(env.dt)


def _tracking_camera():
    """A camera beside the robot that follows its root body (runs soon leave any fixed view)."""
    import mujoco

    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
    camera.trackbodyid = 1
    camera.distance, camera.azimuth, camera.elevation = 4.0, 90.0, -20.0
    return camera


def _prepare_model(model, width: int, height: int) -> None:
    """Set the model's (visual-only) options for offscreen frames of width x height.

    The offscreen buffer (often 640x480) must hold a frame; the shadow map is capped at 1024²,
    as software GL (EGL on llvmpipe, OSMesa) spends most of a frame on the default 4096² one.
    """
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    model.vis.quality.shadowsize = min(model.vis.quality.shadowsize, 1024)


def _write_video(path: Path, images: list, fps: float) -> None:
    import imageio.v3 as iio

    frames = np.stack(images)
    if path.suffix.lower() == ".gif":
        iio.imwrite(path, frames, extension=".gif", duration=1000 / min(fps, MAX_GIF_FPS), loop=0)
    else:
        iio.imwrite(path, frames, plugin="FFMPEG", fps=fps)
