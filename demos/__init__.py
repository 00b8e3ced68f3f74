"""Demonstrations: collect them from a task's expert, store them (HDF5, robomimic layout), load them.

Public API::

    collect(task, episodes, out, seed=0, noise=0.0, *, overwrite=False, ...) -> CollectResult
    load(source, obs_keys=None) -> DemoDataset     # HDF5 file, Minari directory or local Minari id
    DemoDataset: .episodes, .train_indices, .valid_indices, .obs_dim, .act_dim, .task, .env_kwargs,
                 .obs_keys, .image_shapes, .source, .metadata, .normalization(),
                 .windows(split, history, chunk), .summary()
    Episode: obs (T, D), actions (T, A), rewards (T,), dones (T,), success (T,) | None, seed, name,
             state (T, S), images {key: (T, H, W, 3) uint8}

Modules: ``episode`` (schema, validation, default split), ``collector`` (expert rollouts),
``hdf5`` (robomimic layout, atomic writes), ``minari_source`` (Minari import), ``dataset``
(normalization, training windows), ``sources`` (``load``: detects the kind of source).
"""

from demos.collector import CollectResult, collect
from demos.dataset import DemoDataset, WindowDataset
from demos.episode import Episode
from demos.sources import load

__all__ = ["CollectResult", "DemoDataset", "Episode", "WindowDataset", "collect", "load"]
