"""LeRobot datasets (format v3.0) as demonstrations, read with pyarrow and PyAV (the ``lerobot`` extra).

A dataset is a directory::

    meta/info.json                      codebase_version "v3.0", fps, features {key: {dtype, shape}},
                                        data_path and video_path (templates with chunk and file indices)
    meta/episodes/chunk-*/file-*.parquet one row per episode: episode_index, length, dataset_from_index,
                                        dataset_to_index, videos/<key>/{chunk_index,file_index,from_timestamp}
    data/chunk-*/file-*.parquet         one row per frame (many episodes per file): index, episode_index,
                                        frame_index, timestamp, the vector features (observation.state,
                                        action, ...) as list columns, images stored as PNG (dtype "image")
    videos/<key>/chunk-*/file-*.mp4     one video per camera (dtype "video"), many episodes per file

Vector features become observation keys under their own names (``observation.state``); ``action``
is the action. A camera feature ``observation.images.<camera>`` becomes the image key
``<camera>_image`` (uint8 ``(T, H, W, 3)``, the name robomimic and the toolkit's own files use;
``obs_keys`` may name it either way). A frame at ``timestamp`` of an episode is the video frame at
``from_timestamp + timestamp``, the nearest one within half a frame. ``next.reward``, ``next.done``
and ``next.success`` become rewards, dones and success when present. The default observation keys
are every vector feature whose name starts with ``observation.``, sorted; images only when named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from demos.dataset import DemoDataset
from demos.episode import default_split, make_episode
from dopr_robot.errors import UserError

LEROBOT_MISSING = "reading LeRobot datasets needs the lerobot extra: pip install 'dopr-robot[lerobot]'"
FRAME_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
IMAGE_DTYPES = ("video", "image")


def is_lerobot_dir(path: Path) -> bool:
    return (path / "meta" / "info.json").is_file()


def image_key_of(feature: str) -> str:
    """``observation.images.top`` -> ``top_image``."""
    return f"{feature.rsplit('.', 1)[-1]}_image"


def _imports() -> tuple[Any, Any]:
    try:
        import av
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(LEROBOT_MISSING) from None
    return pq, av


def _info(root: Path) -> dict[str, Any]:
    try:
        info = json.loads((root / "meta" / "info.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{root}/meta/info.json cannot be read as JSON ({err}); copy the dataset again") from None
    version = str(info.get("codebase_version", "?"))
    if not version.startswith("v3"):
        raise UserError(f"{root} is a LeRobot dataset of format {version}; only v3.0 is read (convert it with "
                        "lerobot's convert_dataset_v21_to_v30 script)")
    if not isinstance(info.get("features"), dict) or "action" not in info["features"]:
        raise UserError(f"{root}/meta/info.json has no features with an 'action'; it is not a LeRobot v3.0 dataset")
    return info


def _choose_keys(root: Path, features: dict[str, Any], obs_keys: list[str] | None) -> tuple[list[str], list[str]]:
    """(vector features, image features) named by ``obs_keys`` (default: the observation vectors)."""
    images = {key: key for key, spec in features.items() if spec.get("dtype") in IMAGE_DTYPES}
    images |= {image_key_of(key): key for key in list(images)}
    vectors = [key for key, spec in features.items()
               if spec.get("dtype") not in IMAGE_DTYPES and key not in FRAME_COLUMNS and key != "action"]
    if obs_keys is None:
        obs_keys = sorted(key for key in vectors if key.startswith("observation."))
        if not obs_keys:
            raise UserError(f"{root} has no observation vectors; name keys with obs_keys (features: "
                            f"{', '.join(features)})")
    low_dim, cameras = [], []
    for key in obs_keys:
        if key in images:
            cameras.append(images[key])
        elif key in vectors:
            low_dim.append(key)
        else:
            raise UserError(f"{root} has no observation key {key!r}; available keys: {', '.join(sorted(vectors))}, "
                            f"images: {', '.join(sorted(images))}")
    return low_dim, cameras


def _read_parquet_dir(pq: Any, directory: Path, what: str) -> Any:
    import pyarrow as pa

    files = sorted(directory.glob("chunk-*/file-*.parquet"))
    if not files:
        raise UserError(f"{directory} holds no chunk-*/file-*.parquet files; the LeRobot dataset misses its {what}")
    return pa.concat_tables([pq.read_table(file) for file in files])


def _column(table: Any, key: str) -> np.ndarray:
    """A column as an array ``(N,)`` or, for a list column, ``(N, D)``."""
    import pyarrow.types as types

    column = table.column(key).combine_chunks()
    if types.is_list(column.type) or types.is_large_list(column.type) or types.is_fixed_size_list(column.type):
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
    return column.to_numpy(zero_copy_only=False)


def read_lerobot(root: str | Path, obs_keys: list[str] | None = None) -> DemoDataset:
    """Load the LeRobot v3.0 dataset in directory ``root`` (see the module docstring)."""
    root = Path(root)
    pq, av = _imports()
    info = _info(root)
    features = info["features"]
    low_dim, cameras = _choose_keys(root, features, obs_keys)
    frames = _read_parquet_dir(pq, root / "data", "frames").sort_by("index")
    episodes_table = _read_parquet_dir(pq, root / "meta" / "episodes", "episode index").sort_by("episode_index")
    index = _column(frames, "index")
    columns = {key: _column(frames, key) for key in [*low_dim, "action", "timestamp"]
               + [key for key in ("next.reward", "next.done", "next.success") if key in frames.column_names]}
    rows = episodes_table.to_pylist()
    images = {camera: _camera_frames(root, info, camera, rows, index, columns["timestamp"], frames, av)
              for camera in cameras}
    episodes = []
    for row in rows:
        start, stop = np.searchsorted(index, [row["dataset_from_index"], row["dataset_to_index"]])
        part = {key: value[start:stop] for key, value in columns.items()}
        obs = np.concatenate([part[key].reshape(stop - start, -1) for key in low_dim], axis=1) if low_dim \
            else np.zeros((stop - start, 0), np.float32)
        episodes.append(make_episode(
            f"episode_{row['episode_index']}", obs, part["action"], part.get("next.reward"), part.get("next.done"),
            part.get("next.success"), images={image_key_of(c): images[c][start:stop] for c in cameras}))
    train, valid = default_split(len(episodes))
    metadata = {"format": f"LeRobot {info.get('codebase_version')} dataset", "fps": info.get("fps"),
                "robot_type": info.get("robot_type")}
    keys = [*low_dim, *(image_key_of(c) for c in cameras)]
    return DemoDataset(episodes, train, valid, source=str(root), obs_keys=keys, metadata=metadata)


def _camera_frames(root: Path, info: dict[str, Any], feature: str, rows: list[dict[str, Any]], index: np.ndarray,
                   timestamps: np.ndarray, frames: Any, av: Any) -> np.ndarray:
    """The frames of camera ``feature`` for every row of the data ``(N, H, W, 3)``, in ``index`` order."""
    if info["features"][feature].get("dtype") == "image":
        return _png_frames(root, feature, frames)
    out: np.ndarray | None = None
    by_file: dict[str, list[tuple[int, int, float]]] = {}
    for row in rows:
        start, stop = np.searchsorted(index, [row["dataset_from_index"], row["dataset_to_index"]])
        path = info["video_path"].format(video_key=feature, chunk_index=row[f"videos/{feature}/chunk_index"],
                                         file_index=row[f"videos/{feature}/file_index"])
        by_file.setdefault(path, []).append((int(start), int(stop), float(row[f"videos/{feature}/from_timestamp"])))
    for path, parts in by_file.items():
        times, decoded = _decode(root / path, av)
        for start, stop, offset in parts:
            wanted = offset + timestamps[start:stop].astype(np.float64)
            nearest = np.clip(np.searchsorted(times, wanted), 1, len(times) - 1)
            nearest -= (wanted - times[nearest - 1]) < (times[nearest] - wanted)
            if np.any(np.abs(times[nearest] - wanted) > 0.5 / float(info.get("fps", 30))):
                raise UserError(f"{root / path} has no frame near {wanted.max():.3f} s; the video is shorter than "
                                f"its episodes (copy the dataset again)")
            if out is None:
                out = np.zeros((len(index), *decoded.shape[1:]), np.uint8)
            out[start:stop] = decoded[nearest]
    return out


def _decode(path: Path, av: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of the video at ``path``: presentation times (s) ``(F,)`` and RGB frames ``(F, H, W, 3)``."""
    if not path.is_file():
        raise UserError(f"{path} does not exist; the LeRobot dataset misses a video")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            decoded = [(float(frame.pts * stream.time_base), frame.to_ndarray(format="rgb24"))
                       for frame in container.decode(stream)]
    except av.error.FFmpegError as err:
        raise UserError(f"{path} cannot be decoded ({err}); copy the dataset again") from None
    decoded.sort(key=lambda item: item[0])
    if not decoded:
        raise UserError(f"{path} holds no frames")
    return np.array([t for t, _ in decoded]), np.stack([frame for _, frame in decoded])


def _png_frames(root: Path, feature: str, frames: Any) -> np.ndarray:
    """Images stored in the parquet (dtype "image": PNG bytes per row), decoded."""
    import imageio.v3 as iio

    cells = frames.column(feature).to_pylist()
    decoded = [iio.imread(cell["bytes"] if isinstance(cell, dict) else cell) for cell in cells]
    images = np.stack([image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, -1) for image in decoded])
    return images.astype(np.uint8, copy=False)
