"""Flow-matching action heads: a trunk encodes the observation history (the regressors' trunks, or
none: ``flow-unet`` conditions on the flattened history), a velocity network turns Gaussian noise into
the action chunk in ``flow_steps`` Euler steps.

The velocity network is a config field, ``head`` (a name in :data:`HEADS`, with its options beside
it), so every trunk takes every head: ``film-mlp`` (the default of ``flow-mlp`` and
``flow-transformer``, below) or ``unet`` (the default of ``flow-unet``: Diffusion Policy's temporal
U-Net, :mod:`policies.unet`). A head is a module v(x_t (B, C, A), t (B,), features (B, F)) -> (B, C, A);
adding one is a builder and one line in :data:`HEADS`. A head may constrain the chunk
(``FlowHeadConfig.check_chunk``: the U-Net halves it); ``train`` checks it before loading any data
(``policies.check_policy_shape``).

Why: with multimodal demonstrations (the expert passes an obstacle on the left or on the right) an
L2 regressor predicts the mean of the modes, an action no demonstration took. A flow policy learns
the conditional distribution of the (normalized, flattened) action chunk x_1 ∈ R^{C·A} and samples it.

Training (conditional flow matching on the linear, rectified-flow / optimal-transport path):

    x_0 ~ N(0, I),  t ~ p(t),  x_t = (1 - t) x_0 + t x_1,  loss = E ||v(x_t, t, f(obs)) - (x_1 - x_0)||²

averaged over the valid (unpadded) chunk steps like the regressors' loss (padded steps are still part
of x_t, only their velocity goes unsupervised). Inference: x ← x + v(x, k/N, f) / N for k = 0..N-1
from x_0 ~ N(0, I). With N = 1 this is x_0 + v(x_0, 0, f) ≈ E[x_1 | obs]: one Euler step is the
regressor again (the velocity at t = 0 is E[x_1] - x_0), the modes appear only with several steps.

The training distribution of t (``time_sampling``):

- ``uniform`` (default): the plain flow-matching objective. It also weights the velocity field's
  inputs the way the Euler grid t = 0, 1/N, ..., (N-1)/N spreads them at inference, and that matters
  here: DoPr's activation statistics are recorded on training forwards only, so the covariances it
  whitens in the head are those of (x_t, time embedding, features) under the training p(t).
- ``beta``: t = 0.999 (1 - u), u ~ Beta(1.5, 1), i.e. more weight near the noise end (density 1.5 at
  t = 0 falling to 0 at t = 0.999). pi0 (Black et al., arXiv 2410.24164) samples t from a Beta
  distribution that emphasizes the noisy end; the parameters here are our choice in that spirit.

Conditioning of ``film-mlp`` (FiLM): the trunk's features and a sinusoidal embedding of t pass through one Linear +
GELU into a condition vector c, and every residual block of the velocity network scales and shifts
its normalized hidden state by (1 + γ(c), β(c)), γ and β from one Linear each block. The condition
reaches every block multiplicatively (the head can reshape its field per observation and per t
rather than carrying both from its input layer), as in Diffusion Policy's conditional blocks and
DiT's adaLN; every matmul is an ``nn.Linear`` (the time embedding has no weights), so DoPr
preconditions all of them, trunk and head (``DoPr(policy).format_coverage()`` lists them).

Sampling API: ``predict(obs, generator=)`` takes one ``torch.Generator`` for the batch or a sequence
of B, one per row (None: torch's global RNG). Per-row generators make a row's sample independent of
which other rows share the batch: evaluation gives each episode a generator seeded from its reset
seed, so the numbers do not depend on ``--num-envs``. Noise is drawn on the generator's device and
moved to the policy's, so a seed gives the same noise on every device.

Scope, after "Much Ado About Noising: Dispelling the Myths of Generative Robotic Control" (Pan et
al., arXiv 2512.01809): that study reports that on common BC benchmarks the advantage of flow and
diffusion policies over regressors (with matched architectures) comes from supervised iterative
computation paired with stochasticity, not from capturing multimodality. We take from it only what
its public abstract states: compare like with like (the flow policies reuse the regressors' trunks
unchanged, so ``flow-mlp`` vs ``mlp`` differs in the head and the objective only) and do not read a
flow policy's gains on our tasks as multimodality without checking; the multimodal test task in
``tests/test_policies_flow.py`` is the case where a regressor fails by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from policies.base import Generators, Policy, masked_mean
from policies.encoders import ImageEncoderConfig
from policies.mlp import MLPTrunk, MLPTrunkConfig
from policies.transformer import TransformerTrunk, TransformerTrunkConfig
from policies.unet import ACTIVATIONS, TemporalUNet, check_unet_chunk, check_unet_options

TIME_SAMPLING = ("uniform", "beta")


@dataclass(frozen=True)
class FlowHeadConfig:
    """The flow head's options, shared by the flow policies (after their trunk's): which velocity
    network (``head``, a name in :data:`HEADS`), its options, and the sampler's. Options of a head
    other than the chosen one must keep their defaults (they would do nothing)."""

    head_width: int = 0  # film-mlp: hidden width of the velocity network (0: the trunk's feature width)
    head_depth: int = 2  # film-mlp: FiLM residual blocks in the velocity network
    time_dim: int = 32  # size of the sinusoidal time embedding (even)
    time_sampling: str = "uniform"  # training distribution of t: uniform | beta (more weight near the noise end)
    flow_steps: int = 10  # Euler steps from noise to actions at inference (``policy.flow_steps`` changes it later)
    head: str = "film-mlp"  # velocity network: film-mlp (FiLM residual MLP over the flattened chunk) | unet (policies/unet.py)
    unet_width: int = 32  # unet: channels of the first level, doubled at each further level (paper size: 128)
    unet_levels: int = 2  # unet: resolution levels; the chunk is halved levels - 1 times (paper size: 3)
    unet_kernel: int = 5  # unet: temporal kernel size of the residual blocks' convolutions (odd)
    unet_groups: int = 8  # unet: GroupNorm groups (must divide unet_width)
    unet_activation: str = "gelu"  # unet: gelu (the paper's U-Net) | mish (Diffusion Policy's; slower on a CPU)

    def check_head(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; valid: {', '.join(HEADS)}")
        if self.head_width < 0 or self.head_depth < 1 or self.flow_steps < 1:
            raise ValueError(f"invalid flow head in {self}: need head_width >= 0 (0: the trunk's width), "
                             "head_depth >= 1, flow_steps >= 1")
        if self.time_dim < 2 or self.time_dim % 2:
            raise ValueError(f"invalid flow head in {self}: time_dim must be even and >= 2, got {self.time_dim}")
        if self.time_sampling not in TIME_SAMPLING:
            raise ValueError(f"unknown time_sampling {self.time_sampling!r}; valid: {', '.join(TIME_SAMPLING)}")
        check_unet_options(self.unet_width, self.unet_levels, self.unet_kernel, self.unet_groups, self.unet_activation)
        defaults = {f.name: f.default for f in fields(FlowHeadConfig)}
        for head, (_, options) in HEADS.items():
            changed = [name for name in options if head != self.head and getattr(self, name) != defaults[name]]
            if changed:
                raise ValueError(f"{', '.join(changed)} set(s) head {head!r}, but this policy's head is "
                                 f"{self.head!r} (add \"head\": \"{head}\" to use it)")

    def check_chunk(self, chunk: int) -> None:
        """Raise a ValueError unless the velocity network can take a chunk of ``chunk`` steps."""
        if self.head == "unet":
            check_unet_chunk(chunk, self.unet_levels)


@dataclass(frozen=True)
class FlowMLPConfig(ImageEncoderConfig, FlowHeadConfig, MLPTrunkConfig):
    """``mlp``'s trunk options (width, depth, dropout), the flow head's, then the image encoder's."""

    def __post_init__(self) -> None:
        self.check_trunk()
        self.check_head()
        self.check_encoder()


@dataclass(frozen=True)
class FlowTransformerConfig(ImageEncoderConfig, FlowHeadConfig, TransformerTrunkConfig):
    """``transformer``'s trunk options (d_model, n_layers, n_heads, mlp_ratio, dropout), the flow head's,
    then the image encoder's."""

    def __post_init__(self) -> None:
        self.check_trunk()
        self.check_head()
        self.check_encoder()


@dataclass(frozen=True)
class FlowUNetConfig(ImageEncoderConfig, FlowHeadConfig):
    """No trunk (the encoded observation history, flattened, is the condition, as in Diffusion
    Policy), the U-Net head by default, then the image encoder's options. Train it with a chunk the
    U-Net can halve: ``--chunk 16`` and ``--eval-actions-per-chunk 8`` is the published recipe."""

    head: str = "unet"

    def __post_init__(self) -> None:
        self.check_head()
        self.check_encoder()


def time_embedding(t: Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> Tensor:
    """(B,) times in [0, 1] -> (B, dim): sin and cos of 2π t / p for dim/2 periods p spaced
    geometrically from ``min_period`` to ``max_period`` (no weights)."""
    periods = min_period * (max_period / min_period) ** torch.linspace(0.0, 1.0, dim // 2, device=t.device)
    angles = (2.0 * math.pi) * t[:, None] / periods
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class FiLMBlock(nn.Module):
    """h + Linear(GELU(Linear(LN(h) · (1 + γ) + β))), (γ, β) = Linear(c): width -> width."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)  # FiLM supplies the affine part
        self.film = nn.Linear(width, 2 * width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, h: Tensor, condition: Tensor) -> Tensor:
        scale, shift = self.film(condition).chunk(2, dim=-1)
        return h + self.out(nn.functional.gelu(self.hidden(self.norm(h) * (1.0 + scale) + shift)))


class VelocityNet(nn.Module):
    """The ``film-mlp`` head: v(x_t, t, features), (B, C, A), (B,), (B, F) -> (B, C, A), a residual
    MLP over the flattened chunk (n = C·A) with FiLM blocks."""

    def __init__(self, n: int, feature_dim: int, width: int, depth: int, time_dim: int):
        super().__init__()
        self.time_dim = time_dim
        self.condition = nn.Linear(feature_dim + time_dim, width)
        self.embed = nn.Linear(n, width)
        self.blocks = nn.ModuleList(FiLMBlock(width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, n)

    def forward(self, x: Tensor, t: Tensor, features: Tensor) -> Tensor:
        condition = nn.functional.gelu(self.condition(torch.cat([features, time_embedding(t, self.time_dim)], dim=-1)))
        h = self.embed(x.flatten(start_dim=1))
        for block in self.blocks:
            h = block(h, condition)
        return self.out(self.out_norm(h)).view(x.shape)


class UNetVelocity(nn.Module):
    """The ``unet`` head: v(x_t, t, features), (B, C, A), (B,), (B, F) -> (B, C, A), the temporal
    U-Net of :mod:`policies.unet` conditioned on [features, time embedding]; the time embedding is
    sinusoidal, then Linear -> activation -> Linear (Diffusion Policy's, with the U-Net's activation)."""

    def __init__(self, act_dim: int, feature_dim: int, config: FlowHeadConfig):
        super().__init__()
        self.time_dim = config.time_dim
        self.time = nn.Sequential(nn.Linear(config.time_dim, 4 * config.time_dim), ACTIVATIONS[config.unet_activation](),
                                  nn.Linear(4 * config.time_dim, config.time_dim))
        self.unet = TemporalUNet(act_dim, feature_dim + config.time_dim, width=config.unet_width,
                                 levels=config.unet_levels, kernel=config.unet_kernel, groups=config.unet_groups,
                                 activation=config.unet_activation)

    def forward(self, x: Tensor, t: Tensor, features: Tensor) -> Tensor:
        return self.unet(x, torch.cat([features, self.time(time_embedding(t, self.time_dim))], dim=-1))


def _film_mlp(chunk: int, act_dim: int, feature_dim: int, config: FlowHeadConfig) -> nn.Module:
    return VelocityNet(chunk * act_dim, feature_dim, config.head_width or feature_dim, config.head_depth,
                       config.time_dim)


def _unet(chunk: int, act_dim: int, feature_dim: int, config: FlowHeadConfig) -> nn.Module:
    return UNetVelocity(act_dim, feature_dim, config)


# head name -> (builder (chunk, act_dim, feature_dim, config) -> velocity network, the options it reads)
HEADS: dict[str, tuple[Callable[[int, int, int, FlowHeadConfig], nn.Module], tuple[str, ...]]] = {
    "film-mlp": (_film_mlp, ("head_width", "head_depth")),
    "unet": (_unet, ("unet_width", "unet_levels", "unet_kernel", "unet_groups", "unet_activation")),
}


class FlowPolicy(Policy):
    """A trunk (observation history -> features) and a flow-matching head over the action chunk.

    ``forward(obs, noisy_actions, t, images=None)`` is the training network call: normalized
    (B, H, D), the noisy normalized chunk x_t (B, C, A) and t (B,) -> the velocity (B, C, A).
    ``sample`` integrates it; ``predict`` does so in raw units. ``make_trunk(step_dim)`` builds the
    trunk once the image encoders (if any) have fixed the size of a history step; ``feature_dim`` is
    the width of its output (0: ``history * step_dim``, a trunk that flattens the history). The
    velocity network is the config's ``head`` (:data:`HEADS`).
    """

    def __init__(self, obs_dim: int, act_dim: int, history: int, chunk: int, config: FlowHeadConfig,
                 make_trunk, feature_dim: int, image_shapes: Mapping[str, Sequence[int]] | None = None):
        config.check_chunk(chunk)
        super().__init__(obs_dim, act_dim, history, chunk, image_shapes, config)
        self.config = config
        self.trunk = make_trunk(self.step_dim)
        if feature_dim == 0:  # a trunk whose features are the flattened history: known once step_dim is
            feature_dim = history * self.step_dim
        self.velocity = HEADS[config.head][0](chunk, act_dim, feature_dim, config)
        self.flow_steps = config.flow_steps

    @property
    def flow_steps(self) -> int:
        """Euler steps per sample (the config's ``flow_steps`` unless set here, e.g. for an evaluation)."""
        return self._flow_steps

    @flow_steps.setter
    def flow_steps(self, steps: int) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"flow_steps must be an integer >= 1, got {steps!r}")
        self._flow_steps = steps

    def forward(self, obs: Tensor, noisy_actions: Tensor, t: Tensor, images: Mapping[str, Tensor] | None = None) -> Tensor:
        return self.velocity(noisy_actions, t, self.trunk(self.encode(obs, images)))

    def loss(self, batch: dict[str, Tensor], forward=None, generator: torch.Generator | None = None) -> Tensor:
        """The flow-matching loss (see the module docstring) over the valid chunk steps, in normalized
        units; x_0 and t from ``generator`` (None: torch's global RNG, which training checkpoints).
        ``forward`` replaces ``self`` for the network call (a DDP wrapper, autocast)."""
        obs = self.obs_normalizer.normalize(batch["obs"])
        images = self.image_inputs(batch)
        return self._flow_matching_loss(batch, lambda noisy, t: (forward or self)(obs, noisy, t, **images), generator)

    def _flow_matching_loss(self, batch: dict[str, Tensor], velocity_at: Callable[[Tensor, Tensor], Tensor],
                            generator: torch.Generator | None) -> Tensor:
        """The loss of :meth:`loss`, the network given as ``velocity_at(x_t, t)``."""
        target = self.action_normalizer.normalize(batch["actions"])  # x_1 (B, C, A)
        noise = _randn(target.shape, generator, target.device)  # x_0
        t = self.sample_time(len(target), generator, target.device)
        noisy = (1.0 - t)[:, None, None] * noise + t[:, None, None] * target
        return masked_mean((velocity_at(noisy, t) - (target - noise)).pow(2).mean(dim=-1), batch["action_mask"])

    def sample_time(self, batch: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """(B,) training times from the configured distribution (module docstring)."""
        u = _rand((batch,), generator, device)
        if self.config.time_sampling == "beta":
            return 0.999 * (1.0 - u.pow(1.0 / 1.5))  # u^(1/a) ~ Beta(a, 1)
        return u

    def initial_noise(self, batch: int, generator: Generators = None, device: torch.device | None = None) -> Tensor:
        """x_0 (B, C, A): from one generator, or row i from ``generator[i]`` (a sequence of B)."""
        shape = (self.chunk, self.act_dim)
        if generator is None or isinstance(generator, torch.Generator):
            return _randn((batch, *shape), generator, device)
        if len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch}: pass one, or one per row")
        if batch == 0:
            return torch.zeros(0, *shape, device=device)
        return torch.stack([_randn(shape, g, device) for g in generator])

    def sample(self, obs: Tensor, noise: Tensor, steps: int | None = None,
               images: Mapping[str, Tensor] | None = None) -> Tensor:
        """Normalized chunks (B, C, A) for normalized observations (B, H, D) (and their images), by
        ``steps`` (default ``flow_steps``) Euler steps from ``noise`` (B, C, A); the trunk runs once."""
        return self._integrate(self.trunk(self.encode(obs, images)), noise, steps)

    def _integrate(self, features: Tensor, noise: Tensor, steps: int | None = None) -> Tensor:
        """:meth:`sample` from the trunk's ``features`` of the observations."""
        steps = steps or self.flow_steps
        x = noise
        for k in range(steps):
            t = torch.full((len(x),), k / steps, device=x.device)
            x = x + self.velocity(x, t, features) / steps
        return x

    @torch.no_grad()
    def predict(self, obs_history: Tensor, generator: Generators = None,
                images: Mapping[str, Tensor] | None = None) -> Tensor:
        """Sampled chunks in environment units, (B, H, D) raw [+ uint8 images] -> (B, C, A); noise from
        ``generator`` (one for the batch, or one per row; None: torch's global RNG)."""
        self.check_history(obs_history)
        obs = self.obs_normalizer.normalize(obs_history.float())
        noise = self.initial_noise(len(obs), generator, obs.device)
        return self.action_normalizer.unnormalize(self.sample(obs, noise, **self.image_inputs({"images": images})))

    @torch.no_grad()
    def validation_metrics(self, batch: dict[str, Tensor], generator: Generators = None) -> dict[str, Tensor]:
        """``val_loss``: the mean squared error of sampled chunks against the expert's, in normalized
        units over the valid steps (the regressors' val_loss measures the same thing of their
        prediction; note that a policy sampling the expert's own distribution scores twice its
        conditional variance here, a regressor at best once); ``val_flow_loss``: the flow-matching loss.
        Both draw from ``generator`` (the caller seeds it, so numbers compare across steps)."""
        obs = self.obs_normalizer.normalize(batch["obs"])
        # Encoded once for both numbers: a pixel policy's image encoder costs more than the rest of validation.
        features = self.trunk(self.encode(obs, **self.image_inputs(batch)))
        flow_loss = self._flow_matching_loss(batch, lambda noisy, t: self.velocity(noisy, t, features), generator)
        target = self.action_normalizer.normalize(batch["actions"])
        sampled = self._integrate(features, self.initial_noise(len(obs), generator, obs.device))
        return {"val_loss": masked_mean((sampled - target).pow(2).mean(dim=-1), batch["action_mask"]),
                "val_flow_loss": flow_loss}


class FlowMLPPolicy(FlowPolicy):
    """``mlp``'s residual-MLP trunk with a flow-matching head."""

    def __init__(self, obs_dim: int, act_dim: int, history: int = 1, chunk: int = 1,
                 config: FlowMLPConfig = FlowMLPConfig(), image_shapes: Mapping[str, Sequence[int]] | None = None):
        super().__init__(obs_dim, act_dim, history, chunk, config, lambda step_dim: MLPTrunk(history * step_dim, config),
                         config.width, image_shapes)


class FlowTransformerPolicy(FlowPolicy):
    """``transformer``'s causal-attention trunk with a flow-matching head."""

    def __init__(self, obs_dim: int, act_dim: int, history: int = 1, chunk: int = 1,
                 config: FlowTransformerConfig = FlowTransformerConfig(),
                 image_shapes: Mapping[str, Sequence[int]] | None = None):
        super().__init__(obs_dim, act_dim, history, chunk, config,
                         lambda step_dim: TransformerTrunk(step_dim, history, config), config.d_model, image_shapes)


class FlowUNetPolicy(FlowPolicy):
    """No trunk: the encoded observation history, flattened, conditions the U-Net head (Diffusion
    Policy's global condition); ``head`` may name another velocity network."""

    def __init__(self, obs_dim: int, act_dim: int, history: int = 1, chunk: int = 16,
                 config: FlowUNetConfig = FlowUNetConfig(), image_shapes: Mapping[str, Sequence[int]] | None = None):
        super().__init__(obs_dim, act_dim, history, chunk, config, lambda step_dim: nn.Flatten(), 0, image_shapes)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | None) -> Tensor:
    """Standard normal draws from ``generator`` (on its device, then moved) or the global RNG (on ``device``)."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | None) -> Tensor:
    """Uniform [0, 1) draws, like :func:`_randn`."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)
