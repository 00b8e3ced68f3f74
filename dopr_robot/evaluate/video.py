"""Rollout videos: the policy and the expert from the same initial state, side by side.

Each frame shows the step counter and a success marker (a green square while ``is_success`` holds,
grey otherwise) above each panel. When one of the two episodes ends first its last frame is held,
so an episode pair lasts ``max(T_policy, T_expert) + 1`` frames (the reset frame, then one per
step); episodes follow one another. Written with imageio (mp4 through imageio-ffmpeg, or gif),
atomically. Renders use the tasks' fast settings (no shadows/reflections, no multisampling) and
each task's camera ("fixed" in Reach-v0's and Push-v0's XML frames the workspace and the goal at
4:3, hence the default panel size of 320 x 240). A policy that sees images gets a panel per camera
beside its own: the images it was given, at their size scaled up by a whole factor (nearest pixel)
to the panel height, so the video shows what the policy saw next to the third-person view.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import envs
from dopr_robot.atomic import atomic_path, check_destination
from dopr_robot.config import EvalConfig
from dopr_robot.errors import UserError
from dopr_robot.evaluate.evaluation import camera_kwargs, check_spaces, resolve_task
from dopr_robot.evaluate.rollout import ExpertController, PolicyController, Trajectory, check_actions_per_chunk, rollout
from policies import Policy

BANNER = 18  # pixel rows above each panel for the step counter and the success marker
GAP = 4  # pixel columns between the panels
SUFFIXES = (".mp4", ".gif")
DEFAULT_SIZE = (320, 240)  # (width, height) of one panel, in pixels
MIN_SIDE = 16  # pixels


def check_size(size: tuple[int, int], what: str = "--size") -> tuple[int, int]:
    """``size`` as ``(width, height)`` ints, each at least :data:`MIN_SIDE`; a UserError otherwise."""
    try:
        width, height = size
    except (TypeError, ValueError):
        raise UserError(f"{what} must be (width, height) in pixels, got {size!r}") from None
    for value in (width, height):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < MIN_SIDE:
            raise UserError(f"{what} must be whole pixels, at least {MIN_SIDE}x{MIN_SIDE}, got {width}x{height}")
    return int(width), int(height)


def check_video_destination(path: str | Path, *, overwrite: bool) -> Path:
    """Refuse, in one line and before any rollout, a video destination: not .mp4/.gif, an existing
    file (a video is not recognizable as ours, so any existing file is replaced only with
    ``overwrite``), or a place that cannot be written."""
    if Path(path).suffix.lower() not in SUFFIXES:
        raise UserError(f"--out must end in .mp4 or .gif, got '{path}'")
    return check_destination(path, overwrite=overwrite, what="video")


def annotate(frame: np.ndarray, label: str, step: int, success: bool) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 with a banner above it: ``label t=step`` and the success marker."""
    from PIL import Image, ImageDraw

    height, width = frame.shape[:2]
    canvas = Image.new("RGB", (width, height + BANNER), (20, 20, 20))
    canvas.paste(Image.fromarray(np.ascontiguousarray(frame[..., :3])), (0, BANNER))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), f"{label} t={step}", fill=(235, 235, 235))
    draw.rectangle((width - 15, 3, width - 4, 14), fill=(40, 200, 60) if success else (90, 90, 90))
    return np.asarray(canvas)


def compose_episode(panels: list[tuple[str, Trajectory]]) -> list[np.ndarray]:
    """Side-by-side annotated frames of rendered trajectories; shorter ones hold their last frame."""
    frames_out = []
    length = max(t.length for _, t in panels)
    for step in range(length + 1):
        row = []
        for label, trajectory in panels:
            t = min(step, trajectory.length)
            success = bool(trajectory.success[t - 1]) if t > 0 else False
            row.append(annotate(trajectory.frames[t], label, t, success))
            row.append(np.zeros((row[-1].shape[0], GAP, 3), dtype=np.uint8))
        frames_out.append(np.concatenate(row[:-1], axis=1))
    return frames_out


def camera_panel(images: np.ndarray, height: int) -> list[np.ndarray]:
    """Frames ``(height, k·w, 3)`` of camera images ``(T, h, w, 3)``: each scaled up by the largest whole
    factor k that fits ``height`` (nearest pixel: the pixels the policy saw), centred vertically."""
    factor = max(1, height // images.shape[1])
    scaled = images.repeat(factor, axis=1).repeat(factor, axis=2)[:, :height]
    top = (height - scaled.shape[1]) // 2
    padded = np.zeros((len(images), height, scaled.shape[2], 3), dtype=np.uint8)
    padded[:, top:top + scaled.shape[1]] = scaled
    return list(padded)


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad to even height and width (yuv420p video needs them)."""
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    return np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0))) if pad_h or pad_w else frame


def write_video(out: str | Path, episodes: Any, fps: int, size: tuple[int, int] | None = None) -> int:
    """Write an iterable of frame lists (one per episode) to ``out`` (.mp4 or .gif) atomically;
    returns the number of frames written.

    ``size`` ``(width, height)``: scale every frame to it (bilinear) before writing; None keeps the
    frames as they come (they must then all have one size).
    """
    import imageio.v2 as imageio
    from PIL import Image

    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise UserError(f"--out must end in .mp4 or .gif, got {out}")
    if size is not None:
        size = check_size(size, "the video size")
    count = 0
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".mp4":
            writer = imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=7,
                                        macro_block_size=1, pixelformat="yuv420p")
        else:
            writer = imageio.get_writer(tmp, format="GIF", mode="I", duration=1000.0 / fps, loop=0)
        with writer:
            for frames in episodes:
                for frame in frames:
                    if size is not None and (frame.shape[1], frame.shape[0]) != size:
                        frame = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))
                    writer.append_data(_even(frame))
                    count += 1
    return count


def record_video(policy: Policy, task: str, out: str | Path, seeds: list[int], *,
                 env_kwargs: dict[str, Any] | None = None, actions_per_chunk: int = 1, with_expert: bool = True,
                 size: tuple[int, int] = DEFAULT_SIZE, fps: int | None = None,
                 make_env: Callable[..., Any] | None = None, expert: Any = None,
                 obs_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Render one episode per seed (policy, what it saw when it sees images, and expert beside it
    when there is one) into ``out``.

    ``size`` ``(width, height)``: pixels of each panel's render (a banner of :data:`BANNER` rows
    goes above it, panels sit side by side, :data:`GAP` columns apart). ``make_env(**render_kwargs)``
    replaces the registry's factory (``task`` is then a label). ``obs_keys``: the training data's
    observation keys, for a policy that reads dict observations (:class:`PolicyController`).
    Returns ``{"path", "frames", "episodes", "with_expert", "size"}``.
    """
    if len(seeds) < 1:  # EvalConfig counts episodes from 1 (and eval --videos 0 makes none)
        raise ValueError("seeds must hold at least one reset seed, got none")
    width, height = check_size(size)
    check_actions_per_chunk(actions_per_chunk, policy.chunk)
    if make_env is None:
        task, _, registry_expert, _ = resolve_task(task, env_kwargs, with_expert)
        expert = registry_expert if expert is None else expert
        make_env = partial(envs.make, task, **dict(env_kwargs or {}), **camera_kwargs(policy.image_shapes))
    check_spaces(make_env, policy, task, obs_keys)  # a checkpoint of another task: one line, not a shape error mid-rollout
    if not with_expert:
        expert = None
    render_env = partial(make_env, render_mode="rgb_array", width=width, height=height)
    if fps is None:
        probe = render_env()
        fps = int(probe.metadata.get("render_fps", 30))
        probe.close()
    was_training = policy.training
    policy.eval()

    def episodes():
        for seed in seeds:
            run = rollout(render_env, partial(PolicyController, policy, actions_per_chunk=actions_per_chunk,
                                              obs_keys=obs_keys), [seed], 1, render=True)[0]
            panels = [("policy", run)] + [(key.removesuffix("_image") + " (policy input)",
                                           replace(run, frames=camera_panel(run.obs[key], height)))
                                          for key in policy.image_shapes]
            if expert is not None:
                panels.append(("expert", rollout(render_env, lambda k: ExpertController(expert, policy.act_dim),
                                                 [seed], 1, render=True)[0]))
            yield compose_episode(panels)

    try:
        frames = write_video(out, episodes(), fps)
    finally:
        policy.train(was_training)
    return {"path": str(out), "frames": frames, "episodes": len(seeds), "with_expert": expert is not None,
            "size": [width, height]}


def render(policy: Policy, task: str, out: str | Path, settings: EvalConfig, *, episodes: int | None = None,
           env_kwargs: dict[str, Any] | None = None, obs_keys: Sequence[str] = ()) -> dict[str, Any]:
    """``record_video`` of the first ``episodes`` (default: all) of ``settings``' episodes, with its
    chunking, expert, size and frame rate (``eval --videos``, ``video``, ``quickstart``)."""
    seeds = settings.seeds[: settings.episodes if episodes is None else episodes]
    return record_video(policy, task, out, seeds, env_kwargs=env_kwargs, actions_per_chunk=settings.actions_per_chunk,
                        with_expert=settings.with_expert, size=settings.size, fps=settings.fps or None,
                        obs_keys=obs_keys)
