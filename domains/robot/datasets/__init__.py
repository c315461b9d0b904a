"""Offline robot datasets, all read into one ``Episodes`` container."""

from domains.robot.datasets.d4rl_hdf5 import read_d4rl_hdf5
from domains.robot.datasets.episodes import Episodes, flatten_observations, split_episodes
from domains.robot.datasets.minari_reader import read_minari
from domains.robot.datasets.ogbench_npz import read_ogbench_npz

__all__ = ["Episodes", "flatten_observations", "read_d4rl_hdf5", "read_minari", "read_ogbench_npz", "split_episodes"]
