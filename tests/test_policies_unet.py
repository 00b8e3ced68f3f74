"""The temporal U-Net flow head (policies/unet.py, ``flow-unet``): shapes over chunk lengths, the chunk
check before any data loads, the head as a config field of every flow policy, DoPr over its Conv1d,
ConvTranspose1d and FiLM layers, seeded sampling, and collect -> train -> eval through the CLI."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torch import nn

from dopr_robot.cli import main
from dopr_robot.optim import DoPr
from policies import POLICIES, check_policy_shape, make_policy
from policies.base import masked_mean
from policies.unet import TemporalUNet

TINY = {"unet_width": 8, "unet_groups": 4, "time_dim": 8}


def tiny_unet(chunk: int = 8, history: int = 2, **options) -> nn.Module:
    torch.manual_seed(0)
    return make_policy("flow-unet", 5, 3, history=history, chunk=chunk, **{**TINY, **options})


def batch(size: int = 6, history: int = 2, chunk: int = 8) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"obs": torch.randn(size, history, 5, generator=generator),
            "actions": torch.randn(size, chunk, 3, generator=generator),
            "action_mask": torch.ones(size, chunk, dtype=torch.bool)}


@pytest.mark.parametrize("chunk", [8, 16, 32])
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_output_has_the_chunk_shape_for_every_chunk_the_levels_can_halve(chunk: int, levels: int) -> None:
    policy = tiny_unet(chunk, unet_levels=levels)
    velocity = policy(batch(chunk=chunk)["obs"], torch.randn(6, chunk, 3), torch.rand(6))
    assert velocity.shape == (6, chunk, 3) and torch.isfinite(velocity).all()
    convs = [m for m in policy.modules() if isinstance(m, nn.Conv1d) and m.stride == (2,)]
    assert len(convs) == levels - 1  # one halving per level but the last


def test_every_output_step_sees_the_whole_chunk() -> None:
    """The down/up path and the skips connect the ends of the chunk: the first step's velocity
    changes when only the last step's input does (a 5-tap conv stack alone would not reach 16 steps
    in the two blocks of the first level)."""
    unet = TemporalUNet(3, 4, width=8, levels=3, kernel=5, groups=4).eval()
    x, condition = torch.randn(2, 16, 3), torch.randn(2, 4)
    moved = x.clone()
    moved[:, -1] += 1.0
    assert not torch.allclose(unet(x, condition)[:, 0], unet(moved, condition)[:, 0])


@pytest.mark.parametrize("chunk, levels, multiple", [(12, 4, 8), (6, 3, 4), (1, 2, 2)])
def test_a_chunk_the_unet_cannot_halve_is_one_clear_error(chunk: int, levels: int, multiple: int) -> None:
    message = (rf"chunk {chunk} cannot pass a U-Net of unet_levels={levels}: it halves the chunk {levels - 1} "
               rf"time\(s\), so the chunk must be a multiple of {multiple}")
    with pytest.raises(ValueError, match=message):
        make_policy("flow-unet", 5, 3, chunk=chunk, unet_levels=levels)
    with pytest.raises(ValueError, match=message):
        check_policy_shape("flow-unet", 1, chunk, unet_levels=levels)
    check_policy_shape("flow-unet", 1, 2 * multiple, unet_levels=levels)  # a multiple passes


def test_cli_refuses_the_chunk_before_loading_any_data(tmp_path: Path, capsys) -> None:
    """The data file does not exist: the chunk is what the run is refused for (exit 2), nothing written."""
    code = main(["train", "--data", str(tmp_path / "missing.hdf5"), "--out", str(tmp_path / "run"), "--policy",
                 "flow-unet", "--chunk", "12", "--policy-options", '{"unet_levels": 4}', "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--policy flow-unet --chunk 12: chunk 12 cannot pass a U-Net of unet_levels=4" in err
    assert "multiple of 8 (e.g. 8, 16, 32)" in err and "missing.hdf5" not in err
    assert not (tmp_path / "run").exists()


def test_the_head_is_a_config_field_of_every_flow_policy() -> None:
    torch.manual_seed(0)
    mlp_trunk = make_policy("flow-mlp", 5, 3, history=2, chunk=4, width=16, depth=1, head="unet", **TINY)
    assert isinstance(mlp_trunk.velocity.unet, TemporalUNet)
    assert mlp_trunk(batch(chunk=4)["obs"], torch.randn(6, 4, 3), torch.rand(6)).shape == (6, 4, 3)
    no_trunk = make_policy("flow-unet", 5, 3, history=2, chunk=4, head="film-mlp", head_depth=1, time_dim=8)
    assert type(no_trunk.velocity).__name__ == "VelocityNet"
    with pytest.raises(ValueError, match=r"unet_width set\(s\) head 'unet', but this policy's head is 'film-mlp'"):
        make_policy("flow-mlp", 5, 3, unet_width=64)
    with pytest.raises(ValueError, match=r"head_depth set\(s\) head 'film-mlp', but this policy's head is 'unet'"):
        make_policy("flow-unet", 5, 3, chunk=4, head_depth=3)
    with pytest.raises(ValueError, match=r"unknown head 'conv'; valid: film-mlp, unet"):
        make_policy("flow-mlp", 5, 3, head="conv")
    with pytest.raises(ValueError, match=r"unet_groups 3 must divide unet_width 8"):
        make_policy("flow-unet", 5, 3, chunk=4, unet_width=8, unet_groups=3)
    with pytest.raises(ValueError, match=r"unknown unet_activation 'relu'; valid: gelu, mish"):
        make_policy("flow-unet", 5, 3, chunk=4, unet_activation="relu")
    mish = make_policy("flow-unet", 5, 3, history=2, chunk=4, unet_activation="mish", **TINY)
    assert any(isinstance(m, nn.Mish) for m in mish.modules()) and not any(isinstance(m, nn.GELU) for m in mish.modules())
    assert "flow-unet" in POLICIES


def test_images_and_low_dim_condition_the_unet() -> None:
    """With a camera the condition is the flattened history of [low-dim, camera features]: changing only
    the oldest frame's image changes the sampled chunk."""
    torch.manual_seed(0)
    policy = make_policy("flow-unet", 5, 3, history=2, chunk=4, image_shapes={"cam": (24, 24, 3)},
                         encoder_channels=4, encoder_features=8, **TINY)
    images = {"cam": torch.randint(0, 256, (6, 2, 24, 24, 3), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(0))}
    data = {**batch(chunk=4), "images": images}
    policy.loss(data).backward()
    assert all(p.grad is not None for p in policy.image_encoders.parameters())
    policy.eval()
    sampled = policy.predict(data["obs"], generator=torch.Generator().manual_seed(0), images=images)
    assert sampled.shape == (6, 4, 3)
    changed = {"cam": images["cam"].clone()}
    changed["cam"][:, 0] = 255 - changed["cam"][:, 0]
    assert not torch.allclose(policy.predict(data["obs"], generator=torch.Generator().manual_seed(0), images=changed),
                              sampled)


def test_validation_encodes_the_images_once_and_gives_the_loss_and_sample_numbers() -> None:
    """validation_metrics shares one encoding between the flow-matching loss and the sampled chunks (the image
    encoder is most of a pixel policy's validation) and gives what loss() and sample() give separately."""
    torch.manual_seed(0)
    policy = make_policy("flow-unet", 5, 3, history=2, chunk=4, image_shapes={"cam": (24, 24, 3)},
                         encoder_channels=4, encoder_features=8, **TINY).eval()
    images = {"cam": torch.randint(0, 256, (6, 2, 24, 24, 3), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(0))}
    data = {**batch(chunk=4), "images": images}
    encodings = []
    policy.image_encoders["cam"].register_forward_hook(lambda *args: encodings.append(1))
    metrics = policy.validation_metrics(data, torch.Generator().manual_seed(3))
    assert len(encodings) == 1

    generator = torch.Generator().manual_seed(3)  # the same draws in the same order: loss's, then the sample's
    with torch.no_grad():
        flow_loss = policy.loss(data, generator=generator)
        obs = policy.obs_normalizer.normalize(data["obs"])
        sampled = policy.sample(obs, policy.initial_noise(6, generator), images=images)
    target = policy.action_normalizer.normalize(data["actions"])
    assert torch.equal(metrics["val_flow_loss"], flow_loss)
    assert torch.equal(metrics["val_loss"], masked_mean((sampled - target).pow(2).mean(dim=-1), data["action_mask"]))


def test_a_flow_checkpoint_saved_before_the_head_field_loads() -> None:
    """Its config has no head or unet_* keys and its velocity network the same parameter names."""
    torch.manual_seed(0)
    old = make_policy("flow-mlp", 5, 3, chunk=2, width=16, depth=1, head_depth=1)
    config = {k: v for k, v in asdict(old.config).items() if k != "head" and not k.startswith("unet_")}
    clone = make_policy("flow-mlp", 5, 3, chunk=2, **config)
    clone.load_state_dict(old.state_dict())  # strict: every name matches
    assert clone.config.head == "film-mlp"


def test_paper_size_preset_has_about_twenty_million_parameters() -> None:
    """widths 128/256/512, kernel 5, time_dim 256, on Tool-Hang's condition: two cameras of 64 features
    and 9 low-dim numbers, history 2. Built on the meta device: no memory, no initialization."""
    with torch.device("meta"):
        policy = make_policy("flow-unet", 9, 10, history=2, chunk=16, unet_width=128, unet_levels=3, time_dim=256,
                             image_shapes={"agentview": (84, 84, 3), "eye": (84, 84, 3)})
    count = sum(p.numel() for p in policy.velocity.parameters())
    assert 19e6 < count < 21e6, count


def test_dopr_preconditions_every_conv_and_linear_of_the_unet_and_steps_every_parameter() -> None:
    policy = tiny_unet(unet_levels=3).train()
    optimizer = DoPr(policy, base="adamw", lr=1e-3)
    rows = {r["parameter"]: r["preconditioning"] for r in optimizer.coverage()}
    layers = [n for n, m in policy.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.ConvTranspose1d))]
    kinds = {type(m) for m in policy.modules()}
    assert {nn.Conv1d, nn.ConvTranspose1d, nn.Linear, nn.GroupNorm} <= kinds
    for layer in layers:
        assert rows[f"{layer}.weight"].startswith("AP") and rows[f"{layer}.bias"].startswith("AP"), layer
    norms = [n for n, m in policy.named_modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(rows[f"{n}.weight"] == "adamw (raw gradient)" for n in norms)
    films = [n for n in layers if n.endswith(".film")]
    assert films == ["velocity.unet.film"]  # one FiLM Linear for all the blocks: one input covariance
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    loss = policy.loss(batch())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert optimizer.numerics()["skipped"] == 0
    unchanged = [n for n, p in policy.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged


def test_sampling_is_reproducible_from_its_generator() -> None:
    policy = tiny_unet().eval()
    obs = batch()["obs"]
    first = policy.predict(obs, generator=torch.Generator().manual_seed(1))
    assert first.shape == (6, 8, 3)
    torch.testing.assert_close(policy.predict(obs, generator=torch.Generator().manual_seed(1)), first, rtol=0, atol=0)
    assert not torch.allclose(policy.predict(obs, generator=torch.Generator().manual_seed(2)), first)
    rows = policy.predict(obs, generator=[torch.Generator().manual_seed(s) for s in range(6)])
    torch.testing.assert_close(rows[3:4], policy.predict(obs[3:4], generator=[torch.Generator().manual_seed(3)]))


def test_cli_collects_trains_and_evaluates_a_flow_unet(reach_demos: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    options = json.dumps({**TINY, "flow_steps": 2})
    assert main(["train", "--data", str(reach_demos), "--out", str(run_dir), "--policy", "flow-unet", "--chunk", "4",
                 "--history", "2", "--steps", "6", "--batch-size", "16", "--optimizer", "dopr-adamw",
                 "--policy-options", options, "--no-progress"]) == 0
    coverage = (run_dir / "dopr_coverage.txt").read_text()
    assert "conv" in coverage and "velocity.unet.film.weight" in coverage
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(run_dir), "--episodes", "2", "--num-envs", "2", "--actions-per-chunk",
                 "2", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["checkpoint"]["policy"] == "flow-unet" and len(result["records"]) == 2
