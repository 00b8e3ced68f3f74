"""Demonstrations with camera images: collection, the robomimic layout on disk, loading, windows, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import demos
from dopr_robot.cli import main
from dopr_robot.collect_config import CollectConfig, parse_image_size
from dopr_robot.errors import UserError

SHORT = {"horizon": 8}  # Reach-v0 episodes of 8 steps


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same collection (3 episodes) without and with the agentview camera at 32 x 24."""
    base = tmp_path_factory.mktemp("images")
    plain, seen = base / "plain.hdf5", base / "seen.hdf5"
    demos.collect("Reach-v0", 3, plain, seed=5, noise=0.1, env_kwargs=SHORT, progress=False)
    demos.collect("Reach-v0", 3, seen, seed=5, noise=0.1, env_kwargs=SHORT, progress=False,
                  cameras=("agentview",), image_size=(32, 24))
    return plain, seen


def test_cameras_leave_the_states_and_actions_bit_identical(collected: tuple[Path, Path]) -> None:
    plain, seen = collected
    with h5py.File(plain) as a, h5py.File(seen) as b:
        for name in a["data"]:
            for key in ("obs/flat", "next_obs/flat", "obs/robot_state", "obs/goal", "actions", "rewards", "success"):
                np.testing.assert_array_equal(a[f"data/{name}/{key}"][()], b[f"data/{name}/{key}"][()])
            images = b[f"data/{name}/obs/agentview_image"]
            assert images.dtype == np.uint8 and images.shape == (8, 24, 32, 3)
            assert images.chunks == (1, 24, 32, 3) and images.compression == "gzip"
            np.testing.assert_array_equal(b[f"data/{name}/obs/robot_state"][()], b[f"data/{name}/obs/flat"][:, :12])
            assert "agentview_image" not in a[f"data/{name}/obs"]
        assert "agentview_image" not in b[f"data/{name}/next_obs"]


def test_image_keys_load_into_episode_images_and_windows(collected: tuple[Path, Path]) -> None:
    _, seen = collected
    data = demos.load(seen, obs_keys="agentview_image,robot_state")
    assert data.obs_dim == 12 and data.image_shapes == {"agentview_image": (24, 32, 3)}
    assert data.obs_keys == ["agentview_image", "robot_state"]
    with h5py.File(seen) as file:
        first = file["data/demo_0/obs/agentview_image"][()]
        np.testing.assert_array_equal(data.episodes[0].state, file["data/demo_0/obs/flat"][()])
    np.testing.assert_array_equal(data.episodes[0].images["agentview_image"], first)
    assert demos.load(seen).image_shapes == {} and demos.load(seen).obs_keys == ["flat"]  # default: the state

    windows = data.windows("train", history=3, chunk=2)
    batch = windows[[0, 1, 5]]  # steps 0, 1 and 5 of demo_0
    images = batch["images"]["agentview_image"]
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 24, 32, 3)
    expected = first[[[0, 0, 0], [0, 0, 1], [3, 4, 5]]]  # padded with the first frame, like obs
    np.testing.assert_array_equal(images.numpy(), expected)
    item = windows[1]
    np.testing.assert_array_equal(item["images"]["agentview_image"].numpy(), first[[0, 0, 1]])
    assert windows.__getitems__([0, 5])[1]["images"]["agentview_image"].shape == (3, 24, 32, 3)
    assert windows.to("cpu").images["agentview_image"].dtype == torch.uint8
    assert data.normalization()["obs_mean"].shape == (12,)


def test_images_are_held_once_as_uint8(collected: tuple[Path, Path]) -> None:
    _, seen = collected
    data = demos.load(seen, obs_keys=["agentview_image", "robot_state"])
    windows = data.windows("train")
    frames = data.num_transitions
    held = windows.images["agentview_image"]
    assert held.dtype == torch.uint8 and held.shape[0] == frames
    assert held.numel() * held.element_size() == frames * 24 * 32 * 3  # not 4x (float32)
    for episode in data.episodes:  # the episodes' images are views of the same bytes
        assert np.shares_memory(episode.images["agentview_image"], held.numpy())


def _robomimic_file(path: Path, image_dtype: type = np.uint8, sizes: tuple[int, int] = (20, 20)) -> None:
    """A tiny file in robomimic's own image layout (as its image datasets ship), written by hand."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as file:
        for i, length in enumerate((6, 4)):
            group = file.create_group(f"data/demo_{i}")
            group.create_dataset("obs/agentview_image", data=rng.integers(0, 256, (length, 20, 20, 3)).astype(image_dtype))
            group.create_dataset("obs/robot0_eye_in_hand_image",
                                 data=rng.integers(0, 256, (length, *sizes, 3)).astype(np.uint8))
            group.create_dataset("obs/robot0_eef_pos", data=rng.normal(size=(length, 3)))
            group.create_dataset("obs/robot0_eef_quat", data=rng.normal(size=(length, 4)))
            group.create_dataset("actions", data=rng.uniform(-1, 1, (length, 7)))
            group.attrs["num_samples"] = length
        file["data"].attrs["env_args"] = '{"env_name": "Lift", "type": 1, "env_kwargs": {}}'


def test_robomimic_image_files_load_with_image_and_low_dim_keys(tmp_path: Path) -> None:
    path = tmp_path / "image.hdf5"
    _robomimic_file(path)
    data = demos.load(path, obs_keys="agentview_image,robot0_eef_pos")
    assert data.obs_dim == 3 and data.act_dim == 7 and data.image_shapes == {"agentview_image": (20, 20, 3)}
    with h5py.File(path) as file:
        np.testing.assert_array_equal(data.episodes[1].images["agentview_image"], file["data/demo_1/obs/agentview_image"])
        np.testing.assert_allclose(data.episodes[1].obs, file["data/demo_1/obs/robot0_eef_pos"][()].astype(np.float32))
    np.testing.assert_array_equal(data.episodes[1].state, data.episodes[1].obs)  # no flat state: the observation
    assert demos.load(path).obs_keys == ["robot0_eef_pos", "robot0_eef_quat"]  # images skipped by default
    summary = data.summary()
    assert "agentview_image 20x20x3 uint8" in summary and "robot0_eye_in_hand_image 20x20x3 uint8" in summary
    assert data.windows("train", history=2)[[0]]["images"]["agentview_image"].shape == (1, 2, 20, 20, 3)


@pytest.mark.parametrize(("keys", "message"), [
    ("agentview_image,robot0_eef_pos", "image key 'agentview_image' holds float32 (6, 20, 20, 3); expected uint8 (T, H, W, 3)"),
    ("robot0_eye_in_hand_image,robot0_eef_pos", "cameras of different sizes"),
    ("robot0_eef_pos,gripper", "has no observation key 'gripper'; available keys:"),
])
def test_bad_image_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, keys: str,
                                               message: str) -> None:
    path = tmp_path / "bad.hdf5"
    if "float" in message:
        _robomimic_file(path, image_dtype=np.float32)
    else:
        _robomimic_file(path, sizes=(24, 24))
    if "different" in message:
        keys = "agentview_image,robot0_eye_in_hand_image"
    with pytest.raises(UserError, match="^.*" + message.replace("(", r"\(").replace(")", r"\)")):
        demos.load(path, obs_keys=keys)
    assert main(["inspect", str(path), "--obs-keys", keys]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.split(";")[0] in err


def test_collect_refuses_an_unknown_camera_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "x.hdf5"
    code = main(["collect", "--task", "Reach-v0", "--episodes", "1", "--out", str(out), "--cameras", "agentview,wrist",
                 "--no-progress"])
    assert code == 2 and not out.exists() and list(tmp_path.iterdir()) == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "task Reach-v0 has no camera 'wrist'; its cameras: agentview, fixed" in err


def test_collect_config_cameras_and_image_size() -> None:
    assert parse_image_size("64") == (64, 64) and parse_image_size("96x64") == (96, 64)
    config = CollectConfig(episodes=2, cameras=["agentview"], image_size=[48, 32])
    assert config.image_size == (48, 32)
    assert config.record("Reach-v0")["cameras"] == ["agentview"] and config.record("Reach-v0")["image_size"] == [48, 32]
    assert "cameras" not in CollectConfig(episodes=2).record("Reach-v0")  # files from before cameras still match
    with pytest.raises(UserError, match=r"^image_size must be"):  # the field in Python; the CLI names its flag
        CollectConfig(episodes=2, image_size=(2, 2))


def _lerobot_dataset(root: Path) -> np.ndarray:
    """A tiny LeRobot v3.0 dataset written by hand: 2 episodes (5 and 3 frames) at 10 fps in one data file,
    camera "top" as one h264 video holding both episodes, camera "wrist" as PNG images in the parquet.
    Frame k of the dataset is uniformly grey at 20 + 25 k in both cameras; returns those greys."""
    av = pytest.importorskip("av")
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import imageio.v3 as iio

    greys = 20 + 25 * np.arange(8)
    frames = [np.full((24, 32, 3), grey, np.uint8) for grey in greys]
    video = root / "videos/observation.images.top/chunk-000/file-000.mp4"
    video.parent.mkdir(parents=True)
    with av.open(str(video), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    episode, frame_index = [0] * 5 + [1] * 3, [*range(5), *range(3)]
    rng = np.random.default_rng(1)
    data = pa.table({
        "index": np.arange(8), "episode_index": episode, "frame_index": frame_index,
        "timestamp": np.array(frame_index, np.float32) / 10, "task_index": np.zeros(8, np.int64),
        "observation.state": pa.array(list(rng.normal(size=(8, 3)).astype(np.float32)), pa.list_(pa.float32(), 3)),
        "action": pa.array(list(rng.normal(size=(8, 2)).astype(np.float32)), pa.list_(pa.float32(), 2)),
        "next.reward": np.arange(8, dtype=np.float32), "next.done": [False] * 4 + [True] + [False] * 2 + [True],
        "observation.images.wrist": [{"bytes": iio.imwrite("<bytes>", f, extension=".png"), "path": None} for f in frames],
    })
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(data, root / "data/chunk-000/file-000.parquet")
    top = "videos/observation.images.top"
    episodes = pa.table({"episode_index": [0, 1], "length": [5, 3], "dataset_from_index": [0, 5],
                         "dataset_to_index": [5, 8], "data/chunk_index": [0, 0], "data/file_index": [0, 0],
                         f"{top}/chunk_index": [0, 0], f"{top}/file_index": [0, 0],
                         f"{top}/from_timestamp": [0.0, 0.5], f"{top}/to_timestamp": [0.5, 0.8]})
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(episodes, root / "meta/episodes/chunk-000/file-000.parquet")
    image = {"shape": [24, 32, 3], "names": ["height", "width", "channels"]}
    features = {"observation.state": {"dtype": "float32", "shape": [3]}, "action": {"dtype": "float32", "shape": [2]},
                "observation.images.top": {"dtype": "video", **image}, "observation.images.wrist": {"dtype": "image", **image},
                **{key: {"dtype": "int64", "shape": [1]} for key in ("index", "episode_index", "frame_index", "task_index")},
                "timestamp": {"dtype": "float32", "shape": [1]}, "next.reward": {"dtype": "float32", "shape": [1]},
                "next.done": {"dtype": "bool", "shape": [1]}}
    info = {"codebase_version": "v3.0", "fps": 10, "robot_type": "test", "features": features,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}
    (root / "meta/info.json").write_text(json.dumps(info))
    return greys


def test_lerobot_v3_dataset_loads_by_path_with_video_and_png_cameras(tmp_path: Path) -> None:
    root = tmp_path / "lerobot"
    greys = _lerobot_dataset(root)
    data = demos.load(root, obs_keys="observation.images.top,wrist_image,observation.state")
    assert [len(e) for e in data.episodes] == [5, 3] and data.obs_dim == 3 and data.act_dim == 2
    assert data.image_shapes == {"top_image": (24, 32, 3), "wrist_image": (24, 32, 3)}
    for key in ("top_image", "wrist_image"):
        seen = np.concatenate([e.images[key] for e in data.episodes]).reshape(8, -1).mean(axis=1)
        np.testing.assert_allclose(seen, greys, atol=3)  # the right frame for every step (h264 is lossy)
    assert data.episodes[1].dones.tolist() == [False, False, True]
    np.testing.assert_array_equal(data.episodes[1].rewards, [5, 6, 7])
    assert demos.load(root).obs_keys == ["observation.state"]
    with pytest.raises(UserError, match="has no observation key 'gripper'; available keys: .*images: "):
        demos.load(root, obs_keys="gripper")


def test_collect_and_inspect_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "pixels.hdf5"
    assert main(["collect", "--task", "Push-v0", "--episodes", "1", "--out", str(out), "--cameras", "agentview",
                 "--image-size", "16", "--max-attempts", "0", "--no-progress"]) == 0
    assert demos.load(out).metadata["cameras"] == ["agentview"] and demos.load(out).metadata["image_size"] == [16, 16]
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "agentview_image 16x16x3 uint8" in printed and "MB on disk, not loaded" in printed
