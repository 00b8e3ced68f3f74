"""Policies that see images: one encoder per camera beside the low-dim observation, uint8 until the
encoder, random shift in training only, state policies unchanged, checkpoints that rebuild them."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from dopr_robot.checkpoint import policy_from_checkpoint
from policies import POLICIES, make_policy
from policies.encoders import ImageEncoder, ImageEncoderConfig, random_shift, spatial_softmax

TINY = {"mlp": {"width": 16, "depth": 1}, "transformer": {"d_model": 16, "n_heads": 2, "n_layers": 1},
        "flow-mlp": {"width": 16, "depth": 1, "head_depth": 1},
        "flow-transformer": {"d_model": 16, "n_heads": 2, "n_layers": 1, "head_depth": 1},
        "flow-unet": {"unet_width": 8, "unet_levels": 1, "unet_groups": 4}}  # one level: chunk 3 is not halved
ENCODER = {"encoder_channels": 4, "encoder_features": 8}
SHAPES = {"wrist_image": (32, 32, 3), "agentview_image": (32, 40, 3)}


def batch(policy, rows: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    images = {key: torch.randint(0, 256, (rows, policy.history, *shape), generator=g, dtype=torch.uint8)
              for key, shape in policy.image_shapes.items()}
    return {"obs": torch.randn(rows, policy.history, policy.obs_dim, generator=g),
            "actions": torch.randn(rows, policy.chunk, policy.act_dim, generator=g),
            "action_mask": torch.ones(rows, policy.chunk, dtype=torch.bool), "images": images}


@pytest.mark.parametrize("name", list(POLICIES))
def test_every_policy_takes_images_per_history_step(name: str) -> None:
    torch.manual_seed(0)
    policy = make_policy(name, 5, 2, history=2, chunk=3, image_shapes=SHAPES, **TINY[name], **ENCODER)
    assert list(policy.image_shapes) == ["agentview_image", "wrist_image"]  # sorted: the order of the features
    assert policy.step_dim == 5 + 2 * 8
    data = batch(policy)
    loss = policy.loss(data)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is not None for p in policy.image_encoders.parameters())  # the loss reaches the encoders
    actions = policy.eval().predict(data["obs"], generator=torch.Generator().manual_seed(0), images=data["images"])
    assert actions.shape == (3, 3, 2)
    with pytest.raises(ValueError, match="takes images"):
        policy.predict(data["obs"])
    wrong = dict(data["images"], wrist_image=data["images"]["wrist_image"].float())
    with pytest.raises(ValueError, match="'wrist_image': expected uint8"):
        policy.predict(data["obs"], images=wrong)


def test_resnet18_encoder_with_groupnorm() -> None:
    torch.manual_seed(0)
    policy = make_policy("mlp", 4, 2, image_shapes={"agentview_image": (32, 32, 3)}, encoder="resnet18",
                         encoder_features=8, **TINY["mlp"])
    encoder = policy.image_encoders["agentview_image"]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules())
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in encoder.modules()) == 20  # 17 convs + 3 projections
    assert sum(isinstance(m, torch.nn.Conv2d) for m in encoder.modules()) == 21  # ResNet-18's 20 + the keypoint 1x1
    assert policy.eval().predict(batch(policy, 2)["obs"], images=batch(policy, 2)["images"]).shape == (2, 1, 2)


def test_images_stay_uint8_until_the_encoder() -> None:
    policy = make_policy("mlp", 5, 2, history=2, image_shapes=SHAPES, **TINY["mlp"], **ENCODER)
    seen = []
    for encoder in policy.image_encoders.values():
        encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    policy.loss(batch(policy))
    assert seen == [torch.uint8, torch.uint8]


def test_random_shift_is_a_translation_shared_by_a_sample_history() -> None:
    images = torch.arange(6 * 8 * 8 * 3, dtype=torch.float32).view(6, 8, 8, 3)  # 2 samples x history 3, HWC
    torch.manual_seed(1)
    shifted = random_shift(images, 2, group=3)
    offsets = []
    for n in range(6):
        padded = torch.nn.functional.pad(images[n].permute(2, 0, 1)[None], (2,) * 4, mode="replicate")[0]
        offsets.append([(dy, dx) for dy in range(5) for dx in range(5)
                        if torch.equal(padded[:, dy:dy + 8, dx:dx + 8], shifted[n].permute(2, 0, 1))])
    assert all(len(found) == 1 for found in offsets)  # each image is one crop of its padded self
    assert offsets[0] == offsets[1] == offsets[2] and offsets[3] == offsets[4] == offsets[5]  # one per sample


def test_augmentation_only_in_training_mode() -> None:
    torch.manual_seed(0)
    encoder = ImageEncoder(torch.nn.Conv2d(3, 4, 3), keypoints=4, features=8, shift=4)
    plain = ImageEncoder(torch.nn.Conv2d(3, 4, 3), keypoints=4, features=8, shift=0)
    plain.load_state_dict(encoder.state_dict())
    images = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert not torch.equal(encoder(images), encoder(images))  # training: random shifts
        reference = plain(images)
        encoder.eval()
        torch.testing.assert_close(encoder(images), reference, rtol=0, atol=0)  # evaluation: no shift


def test_spatial_softmax_finds_a_peak() -> None:
    maps = torch.full((1, 2, 5, 9), -1e4)
    maps[0, 0, 0, 8] = 0.0  # top right: x = 1, y = -1
    maps[0, 1, 2, 4] = 0.0  # center: (0, 0)
    torch.testing.assert_close(spatial_softmax(maps), torch.tensor([[1.0, 0.0, -1.0, 0.0]]))


def test_default_softmax_temperature_lets_a_small_bump_move_the_keypoint() -> None:
    # A fresh conv encoder's maps differ by ~0.1-1 over 25x25 positions at 64 px. At temperature 1 a
    # bump of 1 at the right edge barely moves the keypoint off the centre (the encoder then learnt
    # to localise Reach-v0's target far slower); the default must let it pull the keypoint over.
    maps = torch.zeros(1, 1, 25, 25)
    maps[0, 0, 12, 24] = 1.0  # right edge, middle row: x = 1, y = 0
    assert spatial_softmax(maps)[0, 0] < 0.01
    assert spatial_softmax(maps, ImageEncoderConfig().softmax_temperature)[0, 0] > 0.9
    with pytest.raises(ValueError, match="softmax_temperature"):
        ImageEncoderConfig(softmax_temperature=0.0).check_encoder()


# Sums of the outputs of the state policies (torch.manual_seed(0), make_policy(NAME, 5, 2, 3, 4, ...))
# computed before policies took images: a state policy must be exactly what it was.
STATE_REFERENCE = {"mlp": (1.55693781375885, -11.143491470254958),
                   "transformer": (1.620747685432434, -3.8591490611433983),
                   "flow-mlp": (2.7527172565460205, 18.643586337566376),
                   "flow-transformer": (2.81927227973938, 12.898047212511301)}


@pytest.mark.parametrize("name", list(STATE_REFERENCE))  # the policies that existed before images
def test_a_state_policy_is_unchanged(name: str) -> None:
    torch.manual_seed(0)
    options = {"width": 32, "depth": 2} if "mlp" in name else {"d_model": 16, "n_layers": 1, "n_heads": 2}
    policy = make_policy(name, 5, 2, 3, 4, **options)
    assert policy.image_shapes == {} and policy.step_dim == 5
    assert not any("image" in key for key in policy.state_dict())
    g = torch.Generator().manual_seed(1)
    obs, actions = torch.randn(6, 3, 5, generator=g), torch.randn(6, 4, 2, generator=g)
    torch.manual_seed(2)
    loss = policy.loss({"obs": obs, "actions": actions, "action_mask": torch.ones(6, 4, dtype=torch.bool)})
    predicted = policy.predict(obs, generator=torch.Generator().manual_seed(3))
    assert (float(loss.detach()), float(predicted.double().sum())) == pytest.approx(STATE_REFERENCE[name], rel=1e-6)


@pytest.mark.parametrize("name", ["mlp", "flow-transformer"])
def test_checkpoint_round_trip_with_images(name: str) -> None:
    torch.manual_seed(0)
    policy = make_policy(name, 5, 2, history=2, chunk=3, image_shapes=SHAPES, **TINY[name], **ENCODER, shift=2)
    record = {"name": name, "obs_dim": 5, "act_dim": 2, "history": 2, "chunk": 3,
              "config": asdict(policy.config),  # every field, as train writes it
              "image_shapes": {key: list(shape) for key, shape in policy.image_shapes.items()}}
    rebuilt = policy_from_checkpoint({"policy": record, "model": policy.state_dict(), "ema": None})
    assert rebuilt.image_shapes == policy.image_shapes and not rebuilt.training
    data = batch(policy)
    predict = lambda p: p.predict(data["obs"], generator=torch.Generator().manual_seed(4), images=data["images"])  # noqa: E731
    torch.testing.assert_close(predict(rebuilt), predict(policy.eval()), rtol=0, atol=0)
    # A checkpoint from before softmax_temperature existed was trained at temperature 1, and loads so.
    del record["config"]["softmax_temperature"]
    older = policy_from_checkpoint({"policy": record, "model": policy.state_dict(), "ema": None})
    assert {e.softmax_temperature for e in older.image_encoders.values()} == {1.0}
    assert {e.softmax_temperature for e in rebuilt.image_encoders.values()} == {0.1}


def test_bad_image_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown encoder 'vit'"):
        make_policy("mlp", 5, 2, image_shapes=SHAPES, encoder="vit")
    with pytest.raises(ValueError, match=r"'agentview_image': expected .* \(h, w, 3\), got \(32, 32\)"):
        make_policy("mlp", 5, 2, image_shapes={"agentview_image": (32, 32)})
    with pytest.raises(ValueError, match="too small"):
        make_policy("mlp", 5, 2, image_shapes={"agentview_image": (8, 8, 3)})
