"""Registry of robot tasks: environment, scripted expert, flat observation and success test.

Every task follows one protocol so collection and evaluation need no task-specific code:

* ``make_env(render_mode=None, seed=None)`` builds the Gymnasium environment (time limit
  included); ``seed`` seeds its action space. Episodes are seeded through ``env.reset``.
* ``reset_options(episode_index)`` gives the ``env.reset`` options of an episode (OGBench's
  evaluation ``task_id`` for the cube; None elsewhere).
* ``make_expert(env, rng, **kwargs)`` builds the scripted expert (see ``experts``).
* ``obs_fn(obs)`` maps the environment observation to the flat float32 vector that
  datasets store and policies consume (dict observations: ``observation`` then
  ``desired_goal``).
* ``success_fn(info, obs, env)`` is evaluated on the last step of an episode: an episode
  succeeds if it holds there. PointMaze and the cube terminate as soon as their own
  ``info['success']`` holds; Reacher always runs its 50 steps and must end with the
  fingertip within ``REACHER_SUCCESS_RADIUS`` of the target.

The goal-conditioned OGBench tasks (``ogbench_cube_single``, ``cube_double``, ``scene``,
``puzzle_3x3``) name their environment in ``ogbench_env``: their data come from OGBench's own
generation procedure (``ogbench_data``), not from a scripted expert here, and their policies
see the full OGBench state and a goal state of the same width (OGBench's GCBC). They are
evaluated on OGBench's five evaluation tasks with its episode lengths.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np

from domains.robot.experts import Expert

# Reacher success: fingertip within 2 cm of the target centre at the final step. The
# fingertip sphere has radius 1 cm and the target 0.9 cm, so 2 cm means touching.
REACHER_SUCCESS_RADIUS = 0.02
RENDER_SIZE = 256  # video frames (software rendering time grows with pixels; 480 is Gymnasium's default)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    env_id: str
    make_env: Callable[..., gymnasium.Env]
    make_expert: Callable[..., Expert]
    obs_fn: Callable[[Any], np.ndarray]
    success_fn: Callable[[dict[str, Any], Any, gymnasium.Env], bool]
    max_episode_steps: int
    reset_options: Callable[[int], dict[str, Any] | None] = field(default=lambda episode: None)
    description: str = ""
    ogbench_env: str | None = None  # goal-conditioned on full states, data by OGBench's procedure
    num_eval_tasks: int = 0  # > 0: reset_options cycles through this many evaluation tasks (``task_id``)

    @property
    def goal_conditioned(self) -> bool:
        return self.ogbench_env is not None


def flat_obs(obs: Any) -> np.ndarray:
    """Flat float32 observation; dict observations give ``observation`` then ``desired_goal``."""
    if isinstance(obs, dict):
        return np.concatenate([np.ravel(obs["observation"]), np.ravel(obs["desired_goal"])]).astype(np.float32)
    return np.asarray(obs, dtype=np.float32).ravel()


def info_success(info: dict[str, Any], obs: Any, env: gymnasium.Env) -> bool:
    return bool(info.get("success", False))


# ---------------------------------------------------------------- Reacher


def reacher_success(info: dict[str, Any], obs: Any, env: gymnasium.Env) -> bool:
    # The last two observation entries are fingertip minus target in x and y.
    return bool(np.linalg.norm(np.asarray(obs)[-2:]) < REACHER_SUCCESS_RADIUS)


def _make_reacher_env(render_mode: str | None = None, seed: int | None = None) -> gymnasium.Env:
    env = gymnasium.make("Reacher-v5", max_episode_steps=50, **_render_kwargs(render_mode))
    return _seeded(env, seed)


def _make_reacher_expert(env: gymnasium.Env, rng: np.random.Generator, **kwargs: Any) -> Expert:
    from domains.robot.experts.reacher import ReacherExpert

    return ReacherExpert(rng, **kwargs)


# ---------------------------------------------------------------- PointMaze


def _pointmaze_env_factory(env_id: str, max_steps: int) -> Callable[..., gymnasium.Env]:
    def make(render_mode: str | None = None, seed: int | None = None) -> gymnasium.Env:
        import gymnasium_robotics

        gymnasium.register_envs(gymnasium_robotics)
        # continuing_task=False: the episode terminates when the goal is reached (info['success']).
        env = gymnasium.make(env_id, continuing_task=False, max_episode_steps=max_steps, **_render_kwargs(render_mode))
        return _seeded(env, seed)

    return make


def _make_pointmaze_expert(env: gymnasium.Env, rng: np.random.Generator, **kwargs: Any) -> Expert:
    from domains.robot.experts.pointmaze import PointMazeExpert

    return PointMazeExpert(env, rng, **kwargs)


# ---------------------------------------------------------------- OGBench cube


class GoalObservation(gymnasium.Wrapper, gymnasium.utils.RecordConstructorArgs):
    """Adds OGBench's evaluation goal to the observation: ``{'observation', 'desired_goal'}``.

    OGBench returns the goal once, as ``info['goal']`` at reset; a one-step policy needs it at
    every step. ``goal_dim`` is its width: the full state's (OGBench's default, what GCBC
    conditions on) or, with ``use_oracle_rep=True``, the goal cube positions (3 per cube);
    a goal of another width is refused. Without a ``task_id`` reset option the task is drawn
    from a generator seeded by ``reset(seed=...)`` rather than NumPy's global one. The action
    space is built once here: OGBench makes a new (unseeded, float64-warning) box on every
    access, and its reset takes random actions from that box to settle the goal scene; the
    environment is given one box, seeded by ``reset(seed=...)``, so goals are reproducible.
    """

    def __init__(self, env: gymnasium.Env, goal_dim: int | None = None):
        gymnasium.utils.RecordConstructorArgs.__init__(self, goal_dim=goal_dim)  # makes env.spec serialisable (Minari stores it)
        gymnasium.Wrapper.__init__(self, env)
        self._goal: np.ndarray | None = None
        self._task_rng = np.random.default_rng()
        with _quiet_float64_box():
            space = env.action_space
        self.action_space = gymnasium.spaces.Box(space.low, space.high, space.shape, np.float32)
        self._reset_actions = _seeded_action_box(env, space)
        self.goal_dim = int(env.observation_space.shape[0]) if goal_dim is None else int(goal_dim)
        self.observation_space = gymnasium.spaces.Dict(
            {
                "observation": env.observation_space,
                "desired_goal": gymnasium.spaces.Box(-np.inf, np.inf, (self.goal_dim,), np.float64),
            }
        )

    def _wrap(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {"observation": obs, "desired_goal": self._goal.copy()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._task_rng = np.random.default_rng(seed)
            self._reset_actions.seed(seed)
        options = dict(options or {})
        if "task_id" not in options and "task_info" not in options:
            options["task_id"] = int(self._task_rng.integers(1, self.env.unwrapped.num_tasks + 1))
        with _quiet_float64_box():  # OGBench's reset samples from its action box
            obs, info = self.env.reset(seed=seed, options=options)
        goal = np.asarray(info["goal"], dtype=np.float64).reshape(-1)
        if goal.shape != (self.goal_dim,):
            raise ValueError(
                f"{self.env.spec.id if self.env.spec else 'the environment'} gives {goal.shape[0]}-D goals but this task "
                f"expects {self.goal_dim}-D goals; build the environment as the task does (use_oracle_rep only for cube_single)."
            )
        self._goal = goal
        return self._wrap(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._wrap(obs), reward, terminated, truncated, info


def _seeded_action_box(env: gymnasium.Env, space: gymnasium.spaces.Box) -> gymnasium.spaces.Box:
    """Give the OGBench environment one action box for its own resets (see ``GoalObservation``):
    its ``action_space`` is a class property, so the instance gets a subclass that returns the box."""
    box = gymnasium.spaces.Box(space.low, space.high, space.shape, np.float32)
    base = env.unwrapped
    cls = type(base)
    base.__class__ = type(cls.__name__, (cls,), {"action_space": property(lambda self: box), "__module__": cls.__module__})
    return box


@contextlib.contextmanager
def _quiet_float64_box() -> Iterator[None]:
    """OGBench declares its action box in float64; Gymnasium warns on every cast to float32."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precision lowered.*")
        yield


CUBE_NUM_TASKS = 5  # OGBench's five evaluation tasks for cube-single


def _make_cube_env(render_mode: str | None = None, seed: int | None = None) -> gymnasium.Env:
    import ogbench.manipspace  # noqa: F401  (registers the OGBench environments)

    # OGBench renders with its own camera whatever render_mode says; it is not passed on.
    with _quiet_float64_box():
        env = GoalObservation(gymnasium.make("cube-single-v0", use_oracle_rep=True, max_episode_steps=200), goal_dim=3)
    if render_mode is not None:
        _no_shadows(env.unwrapped._model)
    return _seeded(env, seed)


def _make_cube_expert(env: gymnasium.Env, rng: np.random.Generator, **kwargs: Any) -> Expert:
    from domains.robot.experts.cube import CubeExpert

    return CubeExpert(env, rng, **kwargs)


def _cube_reset_options(episode: int) -> dict[str, Any]:
    # Cycle through OGBench's evaluation tasks so every task gets its share of episodes.
    return {"task_id": 1 + episode % CUBE_NUM_TASKS}


# ---------------------------------------------------------------- OGBench, goal-conditioned

OGBENCH_NUM_TASKS = 5  # evaluation tasks per OGBench environment (task_id 1..5)
# OGBench's evaluation episode lengths (its registered time limits).
OGBENCH_EVAL_STEPS = {"cube-single-v0": 200, "cube-double-v0": 500, "scene-v0": 750, "puzzle-3x3-v0": 500}


def _ogbench_env_factory(env_id: str) -> Callable[..., gymnasium.Env]:
    def make(render_mode: str | None = None, seed: int | None = None) -> gymnasium.Env:
        import ogbench.manipspace  # noqa: F401  (registers the OGBench environments)

        # Evaluation mode, as OGBench evaluates: full-state observations and goals, episodes end
        # at success (terminate_at_goal) or at the time limit.
        with _quiet_float64_box():
            env = GoalObservation(gymnasium.make(env_id, max_episode_steps=OGBENCH_EVAL_STEPS[env_id]))
        if render_mode is not None:
            _no_shadows(env.unwrapped._model)
        return _seeded(env, seed)

    return make


def _no_expert(env: gymnasium.Env, rng: np.random.Generator, **kwargs: Any) -> Expert:
    raise ValueError(
        "OGBench goal-conditioned tasks have no scripted expert here: their data come from OGBench's procedure "
        "(python -m domains.robot.collect dataset=<name>, or domain.source=local)."
    )


def _ogbench_reset_options(episode: int) -> dict[str, Any]:
    return {"task_id": 1 + episode % OGBENCH_NUM_TASKS}


def _ogbench(name: str, env_id: str, what: str) -> TaskSpec:
    return TaskSpec(
        name=name,
        env_id=env_id,
        make_env=_ogbench_env_factory(env_id),
        make_expert=_no_expert,
        obs_fn=flat_obs,
        success_fn=info_success,
        max_episode_steps=OGBENCH_EVAL_STEPS[env_id],
        reset_options=_ogbench_reset_options,
        description=f"OGBench {env_id} ({what}), goal-conditioned on full goal states; data by OGBench's procedure, "
        f"evaluated on its {OGBENCH_NUM_TASKS} evaluation tasks.",
        ogbench_env=env_id,
        num_eval_tasks=OGBENCH_NUM_TASKS,
    )


# ---------------------------------------------------------------- registry


def _seeded(env: gymnasium.Env, seed: int | None) -> gymnasium.Env:
    if seed is not None:
        env.action_space.seed(seed)
    if env.render_mode is not None and hasattr(env.unwrapped, "model"):
        _no_shadows(env.unwrapped.model)
    return env


def _render_kwargs(render_mode: str | None) -> dict[str, Any]:
    if render_mode is None:
        return {}
    return {"render_mode": render_mode, "width": RENDER_SIZE, "height": RENDER_SIZE}


def _no_shadows(model: Any) -> None:
    """Shadows and reflections only cost rendering time; physics does not use them."""
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0


def _pointmaze(name: str, env_id: str, max_steps: int) -> TaskSpec:
    return TaskSpec(
        name=name,
        env_id=env_id,
        make_env=_pointmaze_env_factory(env_id, max_steps),
        make_expert=_make_pointmaze_expert,
        obs_fn=flat_obs,
        success_fn=info_success,
        max_episode_steps=max_steps,
        description=f"{env_id}: point mass to a random goal cell; obs (6,) = x, y, vx, vy, goal x, goal y.",
    )


TASKS: dict[str, TaskSpec] = {
    "reacher": TaskSpec(
        name="reacher",
        env_id="Reacher-v5",
        make_env=_make_reacher_env,
        make_expert=_make_reacher_expert,
        obs_fn=flat_obs,
        success_fn=reacher_success,
        max_episode_steps=50,
        description="Reacher-v5: 2-link arm to a random target; obs (10,); success = fingertip within 2 cm at step 50.",
    ),
    "pointmaze_umaze": _pointmaze("pointmaze_umaze", "PointMaze_UMaze-v3", 300),
    "pointmaze_medium": _pointmaze("pointmaze_medium", "PointMaze_Medium-v3", 600),
    "pointmaze_large": _pointmaze("pointmaze_large", "PointMaze_Large-v3", 800),
    "cube_single": TaskSpec(
        name="cube_single",
        env_id="cube-single-v0",
        make_env=_make_cube_env,
        make_expert=_make_cube_expert,
        obs_fn=flat_obs,
        success_fn=info_success,
        max_episode_steps=200,
        reset_options=_cube_reset_options,
        description="OGBench cube-single-v0 on its 5 evaluation tasks; obs (31,) = OGBench state (28) + goal cube "
        "position (3).",
    ),
    "ogbench_cube_single": _ogbench("ogbench_cube_single", "cube-single-v0", "one cube"),
    "cube_double": _ogbench("cube_double", "cube-double-v0", "two cubes"),
    "scene": _ogbench("scene", "scene-v0", "a cube, two lock buttons, a drawer and a window"),
    "puzzle_3x3": _ogbench("puzzle_3x3", "puzzle-3x3-v0", "Lights Out on 3x3 buttons"),
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise KeyError(f"Unknown robot task {name!r}; choose one of {sorted(TASKS)}.")
    return TASKS[name]


def episode_seed(seed: int, stream: int, episode: int) -> int:
    """Reset seed of one episode; collection and evaluation use different streams so their
    initial states differ even under the same user seed."""
    return int(np.random.SeedSequence([seed, stream, episode]).generate_state(1)[0])
