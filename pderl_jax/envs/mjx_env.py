"""The paper's five Gymnasium v5 MuJoCo tasks as pure-JAX environments on MuJoCo MJX.

Why: the native backend steps MuJoCo on the host, one callback per time step. Here the same
tasks run as JAX functions (MJX's JAX implementation), so a rollout of many episodes is one
vmapped `lax.while_loop` (`envs.rollout`) with no host round trips, on CPU or on an accelerator.

What: each task loads the very XML file its Gymnasium v5 environment loads by default and does
what that environment does by default: the frame skip, the control range, the observation
(root x, or x and y, left out; Hopper's and Walker2d's velocities clipped to [-10, 10]; Ant's
clipped external contact forces of bodies 1..), the reward terms and weights (forward velocity
from positions before and after the frame-skipped step divided by dt, healthy reward, control
cost on the action, Ant's contact cost), the healthy ranges and termination rules, and the
reset noise. Gymnasium's keyword arguments are accepted under the same names.

Where MJX differs from MuJoCo (C) 4.0, and the choice made here:

- Floating point: MJX runs in float32 (JAX's default), MuJoCo in float64. One step from the same
  state agrees to ~1e-6 relative without contacts and to ~1e-4 relative behind stiff contacts;
  contacts make HalfCheetah and Ant chaotic, so their trajectories part within ~10 steps.
- Contact frames: for a capsule touching a plane, MuJoCo takes the first friction direction along
  the capsule axis projected on the plane; MJX falls back to a fixed direction once that projection
  is shorter than 0.5 (a capsule within 30 degrees of the normal). With pyramidal friction cones the
  direction matters: Ant's steep lower legs land this way (in the planar tasks both frames span the
  same pyramid). By default (`contact_frames="mujoco"`) the frames are set as MuJoCo sets them,
  between MJX's collision and constraint stages; `contact_frames="mjx"` steps with `mjx.step`.
- RK4 (Swimmer, Hopper, Walker2d, Ant): MuJoCo 4.0 integrates quaternion joints on the rotation
  group (Runge-Kutta-Munthe-Kaas), `mjx.rungekutta4` adds the stage velocities linearly; with
  `contact_frames="mujoco"` the step is MuJoCo's. Like MuJoCo, the data after a step keeps the
  kinematics, contacts and forces of the last RK4 stage, which Ant's forward reward (body positions
  before and after) and contact forces read.
- Solver: MJX's Newton solver with MuJoCo's iterations (100), line-search iterations (50) and
  tolerance; `solver_iterations` and `ls_iterations` trade that for speed (under vmap MJX runs all
  line-search iterations; 4 to 16 gave bit-identical steps on 960 checked Hopper and Ant
  steps, and 8 runs ~3x faster).
- MuJoCo resets the simulation when its state becomes non-finite or huge (mj_checkPos/Vel/Acc);
  MJX does not. Hopper, Walker2d and Ant terminate on such states anyway.
- At reset MJX normalises quaternions in qpos, MuJoCo only at the next step: Ant's first
  observation keeps the unnormalised quaternion, as Gymnasium's does.

The time limit is left to the rollout. An episode that has terminated stays frozen: stepping
it again returns its last state and observation with reward 0, so nothing non-finite can leak
from the masked steps.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct
from jax import lax

from pderl_jax.config import ConfigError
from pderl_jax.envs.rollout import Environment
from pderl_jax.envs.native_env import GYMNASIUM_IDS, resolve_task
from pderl_jax.envs.quiet import import_mjx

mjx = import_mjx()

INF = float("inf")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task's Gymnasium v5 defaults; the field names are Gymnasium's keyword arguments."""

    xml_file: str
    frame_skip: int
    ctrl_cost_weight: float
    reset_noise_scale: float
    qvel_noise: str  # "uniform" or "normal": how Gymnasium perturbs the initial velocities
    skipped_qpos: int  # root coordinates left out of the observation (x, or x and y)
    forward_reward_weight: float = 1.0
    exclude_current_positions_from_observation: bool = True
    healthy: str | None = None  # None, "planar" (Hopper, Walker2d) or "ant"
    healthy_reward: float = 0.0
    terminate_when_unhealthy: bool = False
    healthy_z_range: tuple[float, float] = (-INF, INF)
    healthy_angle_range: tuple[float, float] = (-INF, INF)
    healthy_state_range: tuple[float, float] | None = None
    clip_qvel: float | None = None  # observed velocities clipped to [-clip, clip]
    contact_cost_weight: float = 0.0
    contact_force_range: tuple[float, float] = (-1.0, 1.0)
    include_cfrc_ext_in_observation: bool = False
    main_body: int | str | None = None  # forward velocity from this body's position, else from qpos[0]
    options: tuple[str, ...] = ()  # the keyword arguments this task's Gymnasium constructor accepts


_COMMON = ("frame_skip", "forward_reward_weight", "ctrl_cost_weight", "reset_noise_scale",
           "exclude_current_positions_from_observation")
_HEALTH = ("healthy_reward", "terminate_when_unhealthy", "healthy_z_range")

TASK_SPECS = {
    "swimmer": TaskSpec("swimmer.xml", 4, ctrl_cost_weight=1e-4, reset_noise_scale=0.1, qvel_noise="uniform",
                        skipped_qpos=2, options=_COMMON),
    "halfcheetah": TaskSpec("half_cheetah.xml", 5, ctrl_cost_weight=0.1, reset_noise_scale=0.1, qvel_noise="normal",
                            skipped_qpos=1, options=_COMMON),
    "hopper": TaskSpec("hopper.xml", 4, ctrl_cost_weight=1e-3, reset_noise_scale=5e-3, qvel_noise="uniform",
                       skipped_qpos=1, healthy="planar", healthy_reward=1.0, terminate_when_unhealthy=True,
                       healthy_z_range=(0.7, INF), healthy_angle_range=(-0.2, 0.2),
                       healthy_state_range=(-100.0, 100.0), clip_qvel=10.0,
                       options=_COMMON + _HEALTH + ("healthy_angle_range", "healthy_state_range")),
    "walker2d": TaskSpec("walker2d_v5.xml", 4, ctrl_cost_weight=1e-3, reset_noise_scale=5e-3, qvel_noise="uniform",
                         skipped_qpos=1, healthy="planar", healthy_reward=1.0, terminate_when_unhealthy=True,
                         healthy_z_range=(0.8, 2.0), healthy_angle_range=(-1.0, 1.0), clip_qvel=10.0,
                         options=_COMMON + _HEALTH + ("healthy_angle_range",)),
    "ant": TaskSpec("ant.xml", 5, ctrl_cost_weight=0.5, reset_noise_scale=0.1, qvel_noise="normal",
                    skipped_qpos=2, healthy="ant", healthy_reward=1.0, terminate_when_unhealthy=True,
                    healthy_z_range=(0.2, 1.0), contact_cost_weight=5e-4, include_cfrc_ext_in_observation=True,
                    main_body=1, options=_COMMON + _HEALTH + ("contact_cost_weight", "contact_force_range",
                                                             "include_cfrc_ext_in_observation", "main_body")),
}
CONTACT_FRAMES = ("mujoco", "mjx")


def gymnasium_model_path(xml_file: str) -> Path:
    """The XML file in the installed Gymnasium package, as its MuJoCo environments resolve it."""
    import gymnasium.envs.mujoco

    return Path(gymnasium.envs.mujoco.__file__).resolve().parent / "assets" / xml_file


@struct.dataclass
class MjxState:
    data: mjx.Data  # the full MJX state: Ant's reward reads kinematics MuJoCo leaves from the last RK4 stage
    obs: jax.Array  # [obs_dim] float32
    done: jax.Array  # bool: the episode has terminated; later steps leave it as it is


# ---------------------------------------------------------------------------------------------- physics


def _quat_integrate(quat: jax.Array, omega: jax.Array, dt) -> jax.Array:
    """Rotate `quat` by the body-frame angular velocity `omega` for `dt`, then normalise (as MuJoCo)."""
    speed = jnp.linalg.norm(omega)
    axis = omega / jnp.where(speed > 0, speed, 1.0)
    half = 0.5 * dt * speed
    w1, v1 = quat[0], quat[1:]
    w2, v2 = jnp.cos(half), axis * jnp.sin(half)
    product = jnp.concatenate([(w1 * w2 - v1 @ v2)[None], w1 * v2 + w2 * v1 + jnp.cross(v1, v2)])
    return product / jnp.linalg.norm(product)


def _dexp_inverse(theta: jax.Array, omega: jax.Array) -> jax.Array:
    """dexp^-1 of SO(3) at rotation vector `theta` applied to `omega`:
    omega + theta x omega / 2 + (1/t^2 - (1 + cos t) / (2 t sin t)) theta x (theta x omega), t = |theta|."""
    t = jnp.linalg.norm(theta)
    safe = jnp.where(t > 0.5, t, 1.0)
    closed = 1 / safe**2 - (1 + jnp.cos(safe)) / (2 * safe * jnp.sin(safe))
    series = 1 / 12 + t**2 / 720 + t**4 / 30240 + t**6 / 1209600  # the closed form loses float32 precision near 0
    coefficient = jnp.where(t > 0.5, closed, series)
    cross = jnp.cross(theta, omega)
    return omega + 0.5 * cross + coefficient * jnp.cross(theta, cross)


class _Physics:
    """MJX stepping of one model: `mjx.step`, or the same stages with MuJoCo's contact frames."""

    def __init__(self, model: mujoco.MjModel, contact_frames: str):
        if model.na and contact_frames == "mujoco":
            raise ConfigError("contact_frames='mujoco' steps models without actuator activations only")
        self.model = mjx.put_model(model, device=jax.local_devices()[0], impl="jax")  # (default: jax.devices()[0], process 0's)
        self.contact_frames = contact_frames
        types = np.asarray(model.geom_type)
        self._geom_is_plane = jnp.asarray(types == mujoco.mjtGeom.mjGEOM_PLANE)
        self._geom_is_capsule = jnp.asarray(types == mujoco.mjtGeom.mjGEOM_CAPSULE)
        # qpos integration layout: scalar joints, and the quaternions of free and ball joints
        scalar_q, scalar_v, self._rotations = [], [], []
        for joint in range(model.njnt):
            kind, q, v = mujoco.mjtJoint(model.jnt_type[joint]), model.jnt_qposadr[joint], model.jnt_dofadr[joint]
            if kind in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
                scalar_q.append(q), scalar_v.append(v)
            elif kind == mujoco.mjtJoint.mjJNT_FREE:
                scalar_q.extend(range(q, q + 3)), scalar_v.extend(range(v, v + 3))
                self._rotations.append((q + 3, v + 3))
            else:  # ball
                self._rotations.append((q, v))
        self._scalar_q, self._scalar_v = np.asarray(scalar_q, int), np.asarray(scalar_v, int)
        self.integrator = mjx.IntegratorType(model.opt.integrator)

    def _contact_frames(self, d: mjx.Data) -> mjx.Data:
        """MuJoCo's frames for plane-capsule contacts: first tangent = capsule axis projected on the plane."""
        contact = d._impl.contact
        if contact.geom.shape[0] == 0:
            return d
        normal = contact.frame[:, 0]
        axis = d.geom_xmat[contact.geom[:, 1], :, 2]
        tangent = axis - normal * jnp.sum(normal * axis, axis=-1, keepdims=True)
        length = jnp.linalg.norm(tangent, axis=-1, keepdims=True)
        fix = (self._geom_is_plane[contact.geom[:, 0]] & self._geom_is_capsule[contact.geom[:, 1]])[:, None]
        fix = fix & (length > 1e-6)  # a capsule exactly normal to the plane keeps MJX's frame, as MuJoCo's default
        tangent = jnp.where(fix, tangent / jnp.where(fix, length, 1.0), contact.frame[:, 1])
        binormal = jnp.where(fix, jnp.cross(normal, tangent), contact.frame[:, 2])
        return d.tree_replace({"_impl.contact.frame": jnp.stack([normal, tangent, binormal], axis=1)})

    def forward(self, d: mjx.Data) -> mjx.Data:
        """`mjx.forward`, with the contact frames corrected between collision and constraints."""
        m = self.model
        if self.contact_frames == "mjx":
            return mjx.forward(m, d)
        for stage in (mjx.kinematics, mjx.com_pos, mjx.camlight, mjx.tendon, mjx.crb, mjx.tendon_armature,
                      mjx.factor_m, mjx.collision):
            d = stage(m, d)
        d = self._contact_frames(d)
        for stage in (mjx.make_constraint, mjx.transmission, mjx.sensor_pos, mjx.fwd_velocity, mjx.sensor_vel,
                      mjx.fwd_actuation, mjx.fwd_acceleration):
            d = stage(m, d)
        if d._impl.efc_J.size == 0:
            return d.replace(qacc=d.qacc_smooth)
        return mjx.sensor_acc(m, mjx.solve(m, d))

    def _integrate_qpos(self, qpos: jax.Array, qvel: jax.Array, dt) -> jax.Array:
        qpos = qpos.at[self._scalar_q].add(dt * qvel[self._scalar_v])
        for q, v in self._rotations:
            qpos = qpos.at[q:q + 4].set(_quat_integrate(qpos[q:q + 4], qvel[v:v + 3], dt))
        return qpos

    def _rk4(self, d0: mjx.Data) -> mjx.Data:
        """MuJoCo's (4.0) mj_step with RK4: classical Runge-Kutta 4, with quaternion joints integrated on
        the rotation group (Runge-Kutta-Munthe-Kaas: a stage's angular velocity enters through dexp^-1 at
        the stage's rotation vector from the start). The first stage is the forward pass at `d0`, so one
        forward pass is compiled. The result keeps the last stage's kinematics, contacts and forces, as
        MuJoCo's data does, and qacc = the RK4 mean acceleration."""
        h = self.model.opt.timestep

        def slope(theta_qvel, qvel):  # qvel with the rotational parts mapped through dexp^-1
            for _, v in self._rotations:
                qvel = qvel.at[v:v + 3].set(_dexp_inverse(theta_qvel[v:v + 3], qvel[v:v + 3]))
            return qvel

        def stage(carry, tableau):
            d, k, k_sum, qacc_sum = carry
            a, b, c = tableau
            first = a == 0  # the state itself (also when the previous stage's qacc is not finite)
            qpos = jnp.where(first, d0.qpos, self._integrate_qpos(d0.qpos, a * k, h))
            qvel = jnp.where(first, d0.qvel, d0.qvel + a * h * d.qacc)
            d = self.forward(d.replace(qpos=qpos, qvel=qvel, time=d0.time + c * h))
            k = slope(a * h * k, d.qvel)
            return (d, k, k_sum + b * k, qacc_sum + b * d.qacc), None

        tableau = jnp.array([[0.0, 1 / 6, 0.0], [0.5, 1 / 3, 0.5], [0.5, 1 / 3, 0.5], [1.0, 1 / 6, 1.0]],
                            d0.qvel.dtype)
        zeros = jnp.zeros_like(d0.qvel)
        (d, _, k_sum, qacc_sum), _ = lax.scan(stage, (d0, d0.qvel, zeros, zeros), tableau)
        return d.replace(qpos=self._integrate_qpos(d0.qpos, k_sum, h), qvel=d0.qvel + h * qacc_sum,
                         qacc=qacc_sum, time=d0.time + h, qacc_warmstart=d.qacc)

    def step(self, d: mjx.Data) -> mjx.Data:
        """One MuJoCo time step (`mj_step`)."""
        m = self.model
        if self.contact_frames == "mjx":
            return mjx.step(m, d)
        if self.integrator == mjx.IntegratorType.RK4:
            return self._rk4(d)
        d = self.forward(d)
        if self.integrator == mjx.IntegratorType.EULER:
            return mjx.euler(m, d)
        return mjx.implicit(m, d)


# ---------------------------------------------------------------------------------------------- the task


class MjxEnvironment(Environment):
    """A Gymnasium v5 MuJoCo task as pure JAX functions of one episode (vmapped by the rollout).

    `options` are Gymnasium's keyword arguments of the task (same names and defaults) and
    `contact_frames`, `solver_iterations`, `ls_iterations` (see the module docstring).
    """

    backend = "mjx"

    def __init__(self, task: str, episode_length: int = 1000, *, contact_frames: str = "mujoco",
                 solver_iterations: int | None = None, ls_iterations: int | None = None, **options):
        self.task = resolve_task(task)
        if episode_length <= 0:
            raise ConfigError(f"episode length must be positive, got {episode_length}")
        if contact_frames not in CONTACT_FRAMES:
            raise ConfigError(f"unknown contact_frames {contact_frames!r}; choose one of {', '.join(CONTACT_FRAMES)}")
        spec = TASK_SPECS[self.task]
        unknown = sorted(set(options) - set(spec.options))
        if unknown:
            raise ConfigError(f"{GYMNASIUM_IDS[self.task]} has no option {', '.join(unknown)}; "
                              f"choose from {', '.join(spec.options)} (or MJX's contact_frames, solver_iterations, "
                              "ls_iterations)")
        self.spec = spec = dataclasses.replace(spec, **options)
        own = {"contact_frames": contact_frames, "solver_iterations": solver_iterations, "ls_iterations": ls_iterations}
        defaults = {"contact_frames": "mujoco", "solver_iterations": None, "ls_iterations": None}
        self.options = {**options, **{name: value for name, value in own.items() if value != defaults[name]}}
        self.episode_length = episode_length
        self.env_id = GYMNASIUM_IDS[self.task]

        model = self.host_model()
        if solver_iterations is not None:
            model.opt.iterations = solver_iterations
        if ls_iterations is not None:
            model.opt.ls_iterations = ls_iterations
        self._physics = _Physics(model, contact_frames)
        # On this process's own device, as the model: the default device is process 0's, which the other
        # processes of a multi-process run cannot reach.
        self._data0 = mjx.make_data(self._physics.model, device=jax.local_devices()[0])
        self.dt = float(model.opt.timestep) * spec.frame_skip
        self._init_qpos = jnp.asarray(model.qpos0, jnp.float32)
        self._init_qvel = jnp.zeros((model.nv,), jnp.float32)
        low, high = model.actuator_ctrlrange.astype(np.float32).T  # Gymnasium's action box
        self._action_centre = jnp.asarray((high + low) / 2, jnp.float32)
        self._action_half_range = jnp.asarray((high - low) / 2, jnp.float32)
        self._skipped = spec.skipped_qpos if spec.exclude_current_positions_from_observation else 0
        body = spec.main_body
        self._main_body = None if body is None else (body if isinstance(body, int) else model.body(body).id)
        self._cfrc_ext = spec.include_cfrc_ext_in_observation or spec.contact_cost_weight != 0
        self.obs_dim = int(model.nq - self._skipped + model.nv
                           + spec.include_cfrc_ext_in_observation * 6 * (model.nbody - 1))
        self.action_dim = int(model.nu)
        self.description = f"{self.env_id} on MuJoCo MJX (JAX physics, {contact_frames} contact frames)"

    def host_model(self) -> mujoco.MjModel:
        """A fresh MuJoCo (C) model of the task's XML: what Gymnasium loads (render draws MJX states on it)."""
        return mujoco.MjModel.from_xml_path(str(gymnasium_model_path(self.spec.xml_file)))

    # ------------------------------------------------------------------ pieces of Gymnasium's step
    def _contact_forces(self, d: mjx.Data) -> jax.Array:
        low, high = self.spec.contact_force_range
        return jnp.clip(d._impl.cfrc_ext, low, high)

    def _observe(self, d: mjx.Data) -> jax.Array:
        qvel = d.qvel if self.spec.clip_qvel is None else jnp.clip(d.qvel, -self.spec.clip_qvel, self.spec.clip_qvel)
        parts = [d.qpos[self._skipped:], qvel]
        if self.spec.include_cfrc_ext_in_observation:
            parts.append(self._contact_forces(d)[1:].ravel())
        return jnp.concatenate(parts).astype(jnp.float32)

    def _x_position(self, d: mjx.Data) -> jax.Array:
        return d.qpos[0] if self._main_body is None else d.xpos[self._main_body, 0]

    def _is_healthy(self, d: mjx.Data) -> jax.Array:
        spec = self.spec
        if spec.healthy is None:
            return jnp.array(True)
        (min_z, max_z) = spec.healthy_z_range
        if spec.healthy == "ant":  # finite state, z within the closed range
            state = jnp.concatenate([d.qpos, d.qvel])
            return jnp.all(jnp.isfinite(state)) & (min_z <= d.qpos[2]) & (d.qpos[2] <= max_z)
        z, angle = d.qpos[1], d.qpos[2]  # planar: open ranges on z, the torso angle and (Hopper) the state
        (min_angle, max_angle) = spec.healthy_angle_range
        healthy = (min_z < z) & (z < max_z) & (min_angle < angle) & (angle < max_angle)
        if spec.healthy_state_range is not None:
            low, high = spec.healthy_state_range
            state = jnp.concatenate([d.qpos, d.qvel])[2:]
            healthy &= jnp.all((low < state) & (state < high))
        return healthy

    # ------------------------------------------------------------------ the protocol
    def state_from(self, qpos: jax.Array, qvel: jax.Array) -> MjxState:
        """The state Gymnasium's `reset` followed by `set_state(qpos, qvel)` leaves (cfrc_ext still zero)."""
        qpos_given = jnp.asarray(qpos, self._data0.qpos.dtype)
        d = self._data0.replace(qpos=qpos_given, qvel=jnp.asarray(qvel, self._data0.qvel.dtype))
        d = self._physics.forward(d)
        d = d.replace(qpos=qpos_given)  # MJX normalises quaternions in qpos; MuJoCo only in the next step
        return MjxState(data=d, obs=self._observe(d), done=jnp.array(False))

    def reset(self, key: jax.Array) -> MjxState:
        """Gymnasium's `reset_model`: uniform noise on qpos, uniform or normal noise on qvel."""
        scale = self.spec.reset_noise_scale
        key_qpos, key_qvel = jax.random.split(key)
        qpos = self._init_qpos + jax.random.uniform(key_qpos, self._init_qpos.shape, minval=-scale, maxval=scale)
        if self.spec.qvel_noise == "normal":
            noise = scale * jax.random.normal(key_qvel, self._init_qvel.shape)
        else:
            noise = jax.random.uniform(key_qvel, self._init_qvel.shape, minval=-scale, maxval=scale)
        return self.state_from(qpos, self._init_qvel + noise)

    def step(self, state: MjxState, action: jax.Array):
        """Gymnasium's `step` on an actor output in [-1, 1]: returns (state, obs, reward, terminated)."""
        spec, physics = self.spec, self._physics
        action = self._action_centre + self._action_half_range * action  # what Gymnasium is given
        before = state.data.replace(ctrl=action.astype(state.data.ctrl.dtype))  # MuJoCo clamps it to ctrlrange
        d = lax.fori_loop(0, spec.frame_skip, lambda _, d: physics.step(d), before)
        if self._cfrc_ext:  # Gymnasium calls mj_rnePostConstraint after the frame-skipped steps
            d = mjx.rne_postconstraint(physics.model, d)
        x_velocity = (self._x_position(d) - self._x_position(before)) / self.dt
        healthy = self._is_healthy(d)
        reward = (spec.forward_reward_weight * x_velocity + spec.healthy_reward * healthy
                  - spec.ctrl_cost_weight * jnp.sum(jnp.square(action)))
        if spec.contact_cost_weight:
            reward -= spec.contact_cost_weight * jnp.sum(jnp.square(self._contact_forces(d)))
        terminated = ~healthy & spec.terminate_when_unhealthy
        obs = self._observe(d)

        done = state.done  # a terminated episode stays as it is (its steps are masked by the rollout)
        d = jax.tree.map(lambda new, old: jnp.where(done, old, new), d, state.data)
        obs = jnp.where(done, state.obs, obs)
        reward = jnp.where(done, 0.0, reward).astype(jnp.float32)
        terminated = terminated | done
        return MjxState(data=d, obs=obs, done=terminated), obs, reward, terminated


__all__ = ["CONTACT_FRAMES", "MjxEnvironment", "MjxState", "TASK_SPECS", "TaskSpec", "gymnasium_model_path"]
