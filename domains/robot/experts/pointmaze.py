"""PointMaze expert: a shortest route over the maze grid, followed waypoint by waypoint with PD control.

At each episode start it draws one route uniformly among all shortest cell paths to the
goal cell (breadth-first distances + path counts), so where a maze has several routes of
equal length the demonstrations split between them (multimodal). It steers to the
centre of the next cell on the route, switching to the cell after when close enough, and
to the goal point itself in the goal cell; it re-draws a route if it leaves the current one.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

Cell = tuple[int, int]
_MOVES = ((1, 0), (-1, 0), (0, 1), (0, -1))


def free_cells(maze_map: list[list[Any]]) -> set[Cell]:
    """Cells that are not walls (walls are 1; 0, 'g', 'r', 'c' are free)."""
    return {(i, j) for i, row in enumerate(maze_map) for j, v in enumerate(row) if v != 1}


def bfs_distances(free: set[Cell], goal: Cell) -> dict[Cell, int]:
    """Number of cell moves from every reachable free cell to ``goal``."""
    dist = {goal: 0}
    queue = deque([goal])
    while queue:
        c = queue.popleft()
        for di, dj in _MOVES:
            n = (c[0] + di, c[1] + dj)
            if n in free and n not in dist:
                dist[n] = dist[c] + 1
                queue.append(n)
    return dist


def count_shortest_paths(dist: dict[Cell, int]) -> dict[Cell, int]:
    """How many shortest paths lead from each cell to the goal (the cell at distance 0)."""
    counts: dict[Cell, int] = {}
    for c in sorted(dist, key=dist.get):
        counts[c] = 1 if dist[c] == 0 else sum(counts[n] for n in _next_cells(c, dist))
    return counts


def _next_cells(c: Cell, dist: dict[Cell, int]) -> list[Cell]:
    return [n for n in ((c[0] + di, c[1] + dj) for di, dj in _MOVES) if dist.get(n) == dist[c] - 1]


def sample_shortest_path(start: Cell, dist: dict[Cell, int], counts: dict[Cell, int], rng: np.random.Generator) -> list[Cell]:
    """A shortest cell path start -> goal, uniform over all shortest paths."""
    path = [start]
    while dist[path[-1]] > 0:
        options = _next_cells(path[-1], dist)
        weights = np.array([counts[n] for n in options], dtype=np.float64)
        path.append(options[rng.choice(len(options), p=weights / weights.sum())])
    return path


class PointMazeExpert:
    """Waypoint follower on a uniformly drawn shortest route; PD force toward the next waypoint."""

    def __init__(
        self,
        env: Any,
        rng: np.random.Generator,
        kp: float = 10.0,
        kd: float = 1.0,
        switch_radius: float = 0.3,
    ):
        if not 0 < switch_radius < 0.5:
            # Below half a cell, a point that close to a centre is inside that cell, so
            # advancing along the route never leaves the point outside it.
            raise ValueError(f"switch_radius must be in (0, 0.5) cells, got {switch_radius}.")
        self._maze = env.unwrapped.maze
        self._free = free_cells(self._maze.maze_map)
        self._low, self._high = env.action_space.low, env.action_space.high
        self._rng = rng
        self._kp, self._kd, self._switch_radius = kp, kd, switch_radius
        self._path: list[Cell] = []
        self._index = 0  # position on the path of the cell the point is heading from

    def _cell(self, xy: np.ndarray) -> Cell:
        i, j = self._maze.cell_xy_to_rowcol(np.asarray(xy))
        return int(i), int(j)

    def _plan(self, cell: Cell) -> None:
        self._path = sample_shortest_path(cell, self._dist, self._counts, self._rng)
        self._index = 0

    def reset(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self._dist = bfs_distances(self._free, self._cell(obs["desired_goal"]))
        self._counts = count_shortest_paths(self._dist)
        self._plan(self._cell(obs["achieved_goal"]))

    def _waypoint(self, pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Centre of the next cell on the route, or the goal point once the next cell is the goal cell."""
        cell = self._cell(pos)
        if cell in self._path[self._index :]:
            self._index = self._path.index(cell, self._index)
        elif cell in self._dist:
            self._plan(cell)  # pushed off the route: draw a new shortest route from here
        last = len(self._path) - 1
        # Pass a cell centre once within the switch radius, so turns start a little early.
        while self._index + 1 < last and self._centre(self._index + 1, pos) < self._switch_radius:
            self._index += 1
        if self._index + 1 >= last:
            return goal
        return self._maze.cell_rowcol_to_xy(np.array(self._path[self._index + 1]))

    def _centre(self, k: int, pos: np.ndarray) -> float:
        return float(np.linalg.norm(self._maze.cell_rowcol_to_xy(np.array(self._path[k])) - pos))

    def act(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        pos, vel = obs["observation"][:2], obs["observation"][2:4]
        target = self._waypoint(pos, obs["desired_goal"])
        action = self._kp * (target - pos) - self._kd * vel
        return np.clip(action, self._low, self._high).astype(np.float32)
