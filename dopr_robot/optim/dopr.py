"""DoPr: activation preconditioning (AP) in front of a base gradient preconditioner (GP)."""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import SGD, Adam, AdamW, Optimizer

from dopr_robot.optim.activation import InputSums, damped_factor, inverse_from_factor, solve_right
from dopr_robot.optim.adapters import CONV_FORMS, AdapterOptions, LayerAdapter, adapter_for
from dopr_robot.optim.adamuon import AdaMuonWithAdamW
from dopr_robot.optim.graph_step import step_in_graph
from dopr_robot.optim.muon import MuonWithAdamW
from dopr_robot.optim.signum import Signum


def _params_of(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# The base gradient preconditioners. Each is an unmodified optimizer built over all of the model's
# trainable parameters; DoPr hands it the AP gradient of the covered layers in place of the raw one.
BASE_OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": lambda model, **kw: SGD(_params_of(model), **kw),
    "adam": lambda model, **kw: Adam(_params_of(model), **kw),
    "adamw": lambda model, **kw: AdamW(_params_of(model), **kw),
    "signum": lambda model, **kw: Signum(_params_of(model), **kw),
    "muon": lambda model, **kw: MuonWithAdamW(model, **kw),
    "adamuon": lambda model, **kw: AdaMuonWithAdamW(model, **kw),
}


class _Layer:
    """A covered layer: its parameters, its adapter, its row ``index`` in the stacked input sums of the
    layers of its factor width, and its forward-hook handle."""

    def __init__(self, name: str, module: nn.Module, adapter: LayerAdapter, homogeneous: bool, sums: InputSums,
                 index: int):
        self.name = name
        self.module = module
        self.adapter = adapter
        self.weight = module.weight
        self.bias = module.bias if homogeneous else None
        self.sums = sums
        self.index = index
        self.handle: torch.utils.hooks.RemovableHandle | None = None

    def bias_grad(self) -> Tensor | None:
        """The raw bias gradient (zeros when the bias got none); ``None`` without a trained bias."""
        if self.bias is None:
            return None
        return self.bias.grad if self.bias.grad is not None else torch.zeros_like(self.bias)


# The per-layer state a group keeps stacked (layers first), with its dtype: each layer's ``state`` entry
# is a row (a view) of the group's tensor, so that a step updates a group's state in a few batched calls.
STACKED_STATE = {
    "damping_scale": torch.float32,  # λ multiplier, raised tenfold on a failed factorization
    "damping_retries": torch.int64,  # failed factorizations
    "skipped": torch.int64,  # layer-steps whose raw gradient went to the base (no usable statistics)
    "sigma": torch.float32,  # running average of the statistics (cov_ema > 0)
    "inverse": torch.float32,  # cached (Σ + λI)⁻¹ (refresh_every > 1)
    "has_inverse": torch.bool,  # whether a usable inverse was ever cached
}
# The entries a group starts with, and their first value (the others are created by the first refresh).
FIRST_STATE = {"damping_scale": 1, "damping_retries": 0, "skipped": 0}


def _first_state(key: str, layers: int, device: torch.device) -> Tensor:
    return torch.full((layers,), FIRST_STATE[key], dtype=STACKED_STATE[key], device=device)


class _Group:
    """The covered layers of one factor width (and device): their stacked input sums, and ``state``,
    their optimizer state stacked the same way (keys of STACKED_STATE)."""

    def __init__(self, layers: list[_Layer]):
        self.layers = layers
        self.sums = layers[0].sums
        self.state: dict[str, Tensor] = {}
        self._blocks: tuple[Tensor | None, list[tuple[Tensor, ...]]] = (None, [])

    def inverse_blocks(self) -> list[tuple[Tensor, ...]] | None:
        """``inverse_blocks`` of the cached inverse, made once per inverse tensor (it is updated in place,
        so its views stay valid); ``None`` before the first refresh."""
        inverse = self.state.get("inverse")
        if inverse is None:
            return None
        if self._blocks[0] is not inverse:
            self._blocks = (inverse, inverse_blocks(inverse, self.sums.d_in, self.sums.homogeneous))
        return self._blocks[1]


def _check_arguments(model: nn.Module, base: str, *, lr: float, damping: float, weight_decay: float, cov_ema: float,
                     refresh_every: int, max_damping_retries: int, apply: str, conv_form: str,
                     max_factor_dim: int) -> None:
    """DoPr's arguments, each refused with a message that names the bad value."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"DoPr takes the model (an nn.Module) to hook its layers, got {type(model).__name__}")
    if base not in BASE_OPTIMIZERS:
        raise ValueError(f"Unknown base optimizer {base!r}; valid: {', '.join(BASE_OPTIMIZERS)}")
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr} (must be >= 0)")
    if not damping >= 0.0:
        raise ValueError(f"Invalid damping: {damping} (must be >= 0; try 1e-3 to 1e-1)")
    if not weight_decay >= 0.0:
        raise ValueError(f"Invalid weight_decay: {weight_decay} (must be >= 0)")
    if not 0.0 <= cov_ema < 1.0:
        raise ValueError(f"Invalid cov_ema: {cov_ema} (must be in [0, 1); 0 uses the current batch)")
    if not (isinstance(refresh_every, int) and refresh_every >= 1):
        raise ValueError(f"Invalid refresh_every: {refresh_every!r} (must be an integer >= 1)")
    if apply not in ("auto", "solve", "inverse"):
        raise ValueError(f"Invalid apply: {apply!r} (valid: auto, solve, inverse)")
    if not (isinstance(max_damping_retries, int) and max_damping_retries >= 0):
        raise ValueError(f"Invalid max_damping_retries: {max_damping_retries!r} (must be an integer >= 0)")
    if conv_form not in CONV_FORMS:
        raise ValueError(f"Invalid conv_form: {conv_form!r} (valid: {', '.join(CONV_FORMS)})")
    if not (isinstance(max_factor_dim, int) and not isinstance(max_factor_dim, bool) and max_factor_dim >= 1):
        raise ValueError(f"Invalid max_factor_dim: {max_factor_dim!r} (must be an integer >= 1)")


class DoPr(Optimizer):
    r"""Double preconditioning: AP (activation covariance, input side) then a base GP.

    For every covered layer of ``model``: each ``nn.Linear`` (weight :math:`W`, bias :math:`b`, input
    :math:`z`), and each ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.ConvTranspose1d`` viewed as a linear map
    of rows of its input (``conv_form``; the registry ``adapters.ADAPTERS`` says which layers and how), with
    :math:`\tilde z = [z; 1]`, :math:`\tilde W = [W\ b]` and :math:`\tilde G = \partial L/\partial\tilde W`:

    .. math::
        \tilde\Sigma &= \tfrac1n \textstyle\sum_i \tilde z_i \tilde z_i^\top
            \quad\text{(inputs of the training-mode forwards since the last step)} \\
        \lambda &= \gamma\, \operatorname{tr}(\tilde\Sigma) / (d_{in} + 1) \\
        \tilde M &= \tilde G\, (\tilde\Sigma + \lambda I)^{-1}
            \quad\text{(Cholesky solve)} \\
        \tilde W &\leftarrow \tilde W - \eta\, \mathrm{GP}(\tilde M)
            \quad\text{(plus the base's decoupled weight decay)}

    where GP is the base optimizer, unmodified, fed :math:`\tilde M` (split into weight and bias
    parts) in place of the raw gradient: AdamW's moments are moments of :math:`\tilde M`, Muon
    orthogonalizes its momentum of :math:`\tilde M`, AdaMuon orthogonalizes the sign of its momentum
    of :math:`\tilde M` and normalizes that by its own second moment, Signum takes the sign of its
    momentum of :math:`\tilde M`, and SGD gives AP alone. Parameters of other modules (norms,
    embeddings, positional encodings), and layers refused by their adapter (a grouped convolution,
    a factor wider than ``max_factor_dim``) get the base GP on their raw gradient (AdamW for them
    when the base is Muon or AdaMuon, which also takes conv weights). ``coverage()`` lists which
    parameter gets what and why; construction warns when less than half of the trainable
    parameters (by count) get AP, since DoPr-X is then close to X.

    Statistics come from forward hooks that record only forwards in training mode with gradients
    enabled (``model.eval()``, ``torch.no_grad()`` and ``torch.inference_mode()`` forwards are
    ignored), summed over all such forwards since the last ``step()``, so gradient accumulation
    sees the whole accumulated batch. When ``torch.distributed`` is initialized the sums are
    all-reduced before the solve: DDP over R ranks gives the update of one process on the whole
    batch.

    Layers of one factor width keep their statistics and their state stacked and are factored
    together, one batched call per width and step (fewer small kernels; on a GPU, fewer launches);
    each layer's ``self.state[weight]`` entries are rows (views) of the group's tensors, and the math
    per layer is unchanged.

    Numerical failure, handled on the device: a step never waits for the host (no ``.item()``, no
    data-dependent branch), so on a GPU it queues its kernels and moves on. When a layer's
    factorization breaks down (float32 round-off with a tiny damping, or a NaN in its inputs), that
    step uses the diagonal (Jacobi) part of :math:`\tilde\Sigma + \lambda I` instead, and the
    layer's damping multiplier is raised tenfold (up to :math:`10^{\text{max\_damping\_retries}}`)
    for its next factorizations, selected by masks. Statistics with no finite positive trace (no
    training-mode forward recorded, dead inputs) leave the raw gradient to the base.

    Amortization: with ``refresh_every = k > 1`` the statistics are recorded and the inverse
    :math:`(\tilde\Sigma + \lambda I)^{-1}` recomputed every k-th step only; the steps in between
    apply the cached inverse as one matmul. With ``cov_ema = β > 0`` the factored matrix is the
    running average :math:`\Sigma \leftarrow \beta\Sigma + (1-\beta)\tilde\Sigma` over the recorded
    steps. The defaults (``k = 1``, ``β = 0``) are the exact per-step method.

    Args:
        model: the module to optimize; its covered layers are hooked at construction.
        base: the gradient preconditioner: ``"sgd" | "adam" | "adamw" | "signum" | "muon" | "adamuon"``.
        lr: learning rate, passed to the base (schedulers may change ``param_groups[0]["lr"]``).
        damping: relative damping :math:`\gamma > 0` (a fraction of the mean eigenvalue).
        weight_decay: passed to the base (decoupled for adamw, signum, muon and adamuon; L2 for sgd, adam).
        cov_ema: :math:`\beta \in [0, 1)`, running average of the statistics (0: current batch).
        refresh_every: recompute the factorization every k steps (1: every step).
        max_damping_retries: how often a layer's λ may be raised tenfold after failed factorizations.
        apply: how the exact path applies :math:`(\tilde\Sigma + \lambda I)^{-1}`: ``"solve"`` (two
            triangular solves with the factor), ``"inverse"`` (the inverse formed from the factor,
            then one matmul; the damping keeps it well conditioned), or ``"auto"`` (inverse on
            CUDA, solves elsewhere).
        conv_form: how convolutions are preconditioned (``adapters.py``): ``"channel"`` (the default: the
            c_in x c_in channel second moment over all input positions, applied to every kernel tap) or
            ``"unfold"`` (the second moment of the unfolded c_in·k patches, K-FAC's conv factor). The
            default is chosen by closed-loop success and cost. From pixels (Reach-v0, 64 px, conv encoder,
            200 noise-injected demonstrations, 3 seeds, ``refresh_every=10``; docs/results/pixels.md) both
            forms succeeded equally often (channel 0.81, unfold 0.81; AdamW 0.19), with equal validation
            loss; and the channel form's step costs 1.2-1.4x AdamW's where exact unfold costs 6x (4-conv
            32-channel encoder, 64 px, batch 64, 2 CPU threads; unfold's statistics are n·(c_in·k)² per
            layer, n = batch x output positions), 1.5x with ``refresh_every=10``. Where unfold is
            better: on a small conv-net regression against a random teacher (``benchmarks/conv_ap.py``)
            unfold reached a quarter of AdamW's training loss while channel, which ignores that
            neighbouring pixels correlate, did no better than AdamW and diverged at a learning rate (1e-2)
            AdamW takes. For the tightest fit, or learning rates near 1e-2, take ``"unfold"`` (with
            ``refresh_every=10`` on a CPU).
        max_factor_dim: layers whose factor is wider (inputs of a linear layer, c_in·k for the unfold
            form, c_in for the channel form) get the raw gradient, with that reason in the coverage
            table: a dense factor costs d² memory and d³/3 per factorization (a linear readout of a
            flattened 32x16x16 feature map would need an 8193² one).
        **base_kwargs: the base optimizer's other arguments (e.g. ``betas``, ``momentum``).

    Numerics are counted per layer in ``self.state[weight]`` as device tensors, read by
    ``numerics()`` (one synchronization, when a caller logs): ``damping_retries`` (factorizations
    that failed, λ raised) and ``skipped`` (no usable statistics: the raw gradient went to the base).
    """

    def __init__(
        self,
        model: nn.Module,
        base: str = "adamw",
        lr: float = 1e-3,
        damping: float = 0.01,
        weight_decay: float = 0.0,
        cov_ema: float = 0.0,
        refresh_every: int = 1,
        max_damping_retries: int = 8,
        apply: str = "auto",
        conv_form: str = "channel",
        max_factor_dim: int = 4096,
        **base_kwargs,
    ):
        _check_arguments(model, base, lr=lr, damping=damping, weight_decay=weight_decay, cov_ema=cov_ema,
                         refresh_every=refresh_every, max_damping_retries=max_damping_retries, apply=apply,
                         conv_form=conv_form, max_factor_dim=max_factor_dim)
        defaults = dict(lr=lr, weight_decay=weight_decay, damping=damping, cov_ema=cov_ema,
                        refresh_every=refresh_every, max_damping_retries=max_damping_retries, apply=apply,
                        conv_form=conv_form, max_factor_dim=max_factor_dim)
        super().__init__(_params_of(model), defaults)
        self.base_name = base
        self.base = BASE_OPTIMIZERS[base](model, lr=lr, weight_decay=weight_decay, **base_kwargs)
        self._steps_done = 0  # steps taken by every covered layer (they step together)
        # Whether the hooks record the next forward: a plain flag that each step sets for the next one, so
        # that a compiled forward specializes on its value (one graph per value) rather than on a counter.
        self._recording = True
        self._groups, refused = self._hook_layers(model, AdapterOptions(conv_form, max_factor_dim))
        order = {id(module): i for i, module in enumerate(model.modules())}
        self._layers = sorted((layer for group in self._groups for layer in group.layers), key=lambda l: order[id(l.module)])
        self._coverage = self._describe_coverage(model, refused)
        self._share = self._ap_share(model)
        self._warn_if_mostly_uncovered()
        self._recording = self._records_now()

    # -- construction -------------------------------------------------------------------------

    def _hook_layers(self, model: nn.Module, options: AdapterOptions) -> tuple[list[_Group], dict[int, str]]:
        """Hook every covered layer; layers of one factor width (and device) form a group whose statistics
        are stacked, so that each step factors them in one batched call. Also returns the reasons of the
        layers their adapter refused, by parameter id."""
        holders: dict[int, int] = {}  # how many modules hold each parameter (weight tying)
        for module in model.modules():
            for param in module.parameters(recurse=False):
                holders[id(param)] = holders.get(id(param), 0) + 1
        widths: dict[tuple, list[tuple[str, nn.Module, LayerAdapter, bool]]] = {}
        refused: dict[int, str] = {}
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if not isinstance(weight, nn.Parameter) or not weight.requires_grad:
                continue
            adapter = adapter_for(module, options)
            if adapter is None or holders[id(weight)] > 1:
                continue  # not a registered type, or a tied weight (several input distributions): base GP only
            homogeneous = getattr(module, "bias", None) is not None and module.bias.requires_grad
            if isinstance(adapter, str):
                refused[id(weight)] = adapter
                if homogeneous:
                    refused[id(module.bias)] = adapter
                continue
            key = (adapter.factor_dim, homogeneous, weight.device)
            widths.setdefault(key, []).append((name, module, adapter, homogeneous))
        groups = []
        for (d_in, homogeneous, device), members in widths.items():
            sums = InputSums(d_in, homogeneous, device, layers=len(members))
            group = [_Layer(name, module, adapter, homogeneous, sums, index)
                     for index, (name, module, adapter, _) in enumerate(members)]
            for layer in group:
                layer.handle = layer.module.register_forward_hook(self._make_hook(layer))
            groups.append(_Group(group))
        return groups, refused

    def _make_hook(self, layer: _Layer) -> Callable:
        def record_inputs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if self._recording and module.training and torch.is_grad_enabled():
                layer.sums.add_(layer.adapter.rows(inputs[0], output), layer.index)

        return record_inputs

    def _describe_coverage(self, model: nn.Module, refused: dict[int, str]) -> list[dict[str, str]]:
        ap = {id(layer.weight): layer for layer in self._layers}
        ap.update({id(layer.bias): layer for layer in self._layers if layer.bias is not None})
        # Muon and AdaMuon bases pair a matrix optimizer (linear weights) with AdamW (the rest).
        matrix_half = {MuonWithAdamW: "muon", AdaMuonWithAdamW: "adamuon"}.get(type(self.base))
        matrices = set()
        if matrix_half is not None and getattr(self.base, matrix_half) is not None:
            matrices = {id(p) for p in getattr(self.base, matrix_half).param_groups[0]["params"]}
        rows = []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            base = matrix_half if id(param) in matrices else ("adamw" if matrix_half else self.base_name)
            if id(param) in ap:
                form = ap[id(param)].adapter.form
                how = f"AP ({form}) + {base}" if form else f"AP + {base}"
            else:
                reason = f": {refused[id(param)]}" if id(param) in refused else ""
                how = f"{base} (raw gradient{reason})"
            rows.append({"parameter": name, "shape": "x".join(str(s) for s in param.shape) or "scalar",
                         "preconditioning": how})
        return rows

    def _ap_share(self, model: nn.Module) -> tuple[int, int]:
        """(trainable parameters that get AP, all trainable parameters), counted by elements."""
        covered = sum(p.numel() for layer in self._layers for p in (layer.weight, layer.bias) if p is not None)
        return covered, sum(p.numel() for p in _params_of(model))

    def _warn_if_mostly_uncovered(self) -> None:
        covered, total = self._share
        if total and 2 * covered < total:
            warnings.warn(
                f"DoPr covers only {100 * covered / total:.0f}% of the parameters ({covered} of {total}); the rest "
                f"get the base optimizer's raw gradient, so DoPr-{self.base_name} ≈ {self.base_name} here "
                "(DoPr.format_coverage() lists them)", stacklevel=3)

    # -- introspection ------------------------------------------------------------------------

    def coverage(self) -> list[dict[str, str]]:
        """One row per trainable parameter: name, shape, and which preconditioning it gets."""
        return [dict(row) for row in self._coverage]

    def format_coverage(self) -> str:
        """``coverage()`` as an aligned text table with a one-line summary."""
        rows = self._coverage
        widths = [max(len(h), *(len(r[h]) for r in rows)) if rows else len(h)
                  for h in ("parameter", "shape", "preconditioning")]
        header = {h: h for h in ("parameter", "shape", "preconditioning")}
        lines = ["  ".join(r[h].ljust(w) for h, w in zip(header, widths)).rstrip() for r in [header, *rows]]
        covered = sum(r["preconditioning"].startswith("AP") for r in rows)
        kinds = Counter(layer.adapter.kind for layer in self._layers) or Counter(linear=0)
        hooked = ", ".join(f"{count} {kind} layers hooked" for kind, count in kinds.items())
        elements, total = self._share
        share = f"{100 * elements / total:.0f}% of the parameters by count" if total else "no parameters"
        lines.append(f"{covered} of {len(rows)} parameter tensors get AP ({hooked}); {share}")
        return "\n".join(lines)

    def numerics(self) -> dict[str, int]:
        """Totals over layers: layer-steps taken, failed factorizations (λ raised), and layer-steps
        that skipped AP (no usable statistics: the raw gradient went to the base).

        The counters live on the device; this reads them (one host synchronization): call it when
        logging, not every step.
        """
        counters = [torch.stack((group.state["damping_retries"].sum(), group.state["skipped"].sum())).cpu()
                    for group in self._groups if group.state]
        values = torch.stack(counters).sum(dim=0).tolist() if counters else [0, 0]
        return {
            "layer_steps": sum(self.state[layer.weight].get("step", 0) for layer in self._layers),
            "damping_retries": int(values[0]),
            "skipped": int(values[1]),
        }

    def remove_hooks(self) -> None:
        """Detach the forward hooks (the optimizer then keeps only its cached factors)."""
        for layer in self._layers:
            if layer.handle is not None:
                layer.handle.remove()
                layer.handle = None

    # -- the update ---------------------------------------------------------------------------

    def _records_now(self) -> bool:
        """Statistics are recorded on the steps whose factorization is refreshed: every
        ``refresh_every``-th, the layers together."""
        return self._steps_done % self.param_groups[0]["refresh_every"] == 0

    def _applies_inverse(self, group: _Group) -> bool:
        """Exact path: one matmul with the inverse formed from the factor, or two triangular solves.

        ``auto`` takes the inverse on GPUs (triangular solves are latency-bound there) and the
        solves on CPUs (as fast or faster with few threads; see benchmarks/optimizer_overhead.py).
        """
        choice = self.param_groups[0].get("apply", "auto")
        return choice == "inverse" or (choice == "auto" and group.sums.outer.device.type == "cuda")

    def _all_reduce_sums(self) -> None:
        """Sum the input statistics over ranks, in one collective for all layers."""
        if not (dist.is_available() and dist.is_initialized()) or not self._groups:
            return
        sums = [group.sums for group in self._groups]
        # With the homogeneous coordinate the count is outer's corner: sent once, with outer.
        tensors = [t for s in sums for t in ((s.outer,) if s.homogeneous else (s.outer, s.count))]
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    def _point_rows(self, group: _Group) -> None:
        """Make each layer's state entries the rows of the group's stacked state (views: updating the
        group's tensors in place updates them)."""
        for key, stacked in group.state.items():
            for layer, row in zip(group.layers, stacked.unbind()):
                self.state[layer.weight][key] = row

    def _init_group_state(self, group: _Group) -> None:
        """A group's state before its first step: the entries of FIRST_STATE (device tensors, so that
        counting never waits for the host)."""
        layers, device = len(group.layers), group.sums.outer.device
        group.state = {key: _first_state(key, layers, device) for key in FIRST_STATE}
        for layer in group.layers:
            self.state[layer.weight]["step"] = 0  # steps taken (a host int, saved with the state)
        self._point_rows(group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Precondition the gradients of the covered layers (AP), then take the base step (GP).

        Three parts, which a compiled training step calls one by one (``dopr_robot.train``):
        ``begin_step`` (host-side preparation), ``apply_step`` (tensors only: the part to compile) and
        ``end_step`` (host-side counters)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        refresh = self.begin_step()
        self.apply_step(refresh)
        self.end_step()
        return loss

    def begin_step(self) -> bool:
        """What a step does before its tensor work: all-reduce the statistics (when refreshing), create
        missing state, hand the learning rate and weight decay to the base. Returns whether this step
        refreshes the factorization (the hooks recorded its inputs)."""
        refresh = self._recording
        if refresh:
            self._all_reduce_sums()
        for group in self._groups:
            if not group.state:
                self._init_group_state(group)
            group.inverse_blocks()  # the views of a cached inverse, made here rather than in a compiled step
        # Schedulers and users change this optimizer's group; the base follows it.
        options = self.param_groups[0]
        for base_group in self.base.param_groups:
            base_group["lr"] = options["lr"]
            base_group["weight_decay"] = options["weight_decay"]
        return refresh

    def apply_step(self, refresh: bool) -> None:
        """The AP step of every group, then the base step, on tensors only: no host synchronization and no
        Python state that changes from step to step, so ``torch.compile`` can take it whole once
        ``state_complete()`` (one graph per value of ``refresh``)."""
        swapped: list[tuple[Tensor, Tensor, bool]] = []  # (param, raw grad, in place), restored after the base step
        for group in self._groups:
            swapped += self._precondition_group(group, refresh)
        try:
            step_in_graph(self.base)  # compiled, the AP step and the base step in one graph
        finally:
            for param, raw_grad, in_place in swapped:
                if in_place:
                    param.grad.copy_(raw_grad)
                else:
                    param.grad = raw_grad

    def end_step(self) -> None:
        """Count the step (host integers, saved with the state) and set whether the next forward records."""
        self._steps_done += 1
        for layer in self._layers:
            self.state[layer.weight]["step"] += 1
        self._recording = self._records_now()

    def state_complete(self) -> bool:
        """Whether every group holds all the state its options need (created by the first refresh), so that
        ``apply_step`` creates nothing: a compiled ``apply_step`` then keeps one graph."""
        options = self.param_groups[0]
        keys = set(FIRST_STATE)
        if options["cov_ema"] > 0.0:
            keys.add("sigma")
        if options["refresh_every"] > 1:
            keys.update(("inverse", "has_inverse"))
        return all(keys <= group.state.keys() for group in self._groups)

    def _precondition_group(self, group: _Group, refresh: bool) -> list[tuple[Tensor, Tensor, bool]]:
        """Replace the gradients of a group's layers by their AP gradients; returns (param, raw grad) pairs."""
        options = self.param_groups[0]
        keys = len(group.state)
        layers = group.layers
        raw_bias_grads = [layer.bias_grad() for layer in layers]
        # Each layer's gradient as the matrix AP multiplies from the right (its adapter's view).
        matrices = [(None, bias) if layer.weight.grad is None
                    else layer.adapter.gradient_matrix(layer.weight.grad, bias)
                    for layer, bias in zip(layers, raw_bias_grads)]
        updates = activation_precondition(
            [matrix for matrix, _ in matrices],
            [bias for _, bias in matrices],
            group.state,
            sums=group.sums if refresh else None,
            damping=options["damping"],
            cov_ema=options["cov_ema"],
            cache_inverse=options["refresh_every"] > 1,
            max_damping_retries=options["max_damping_retries"],
            apply_inverse=self._applies_inverse(group),
            cached_blocks=group.inverse_blocks(),
        )
        if len(group.state) != keys:  # the first refresh created sigma or the inverse
            self._point_rows(group)
        swapped = []
        for layer, update, raw_bias in zip(layers, updates, raw_bias_grads):
            if update is None:
                continue  # no gradient this step
            weight_update, bias_update = layer.adapter.parameter_update(update[0], update[1], raw_bias)
            swapped.append(_swap_gradient(layer.weight, weight_update))
            if layer.bias is not None:
                swapped.append(_swap_gradient(layer.bias, bias_update))
        if refresh:
            group.sums.zero_()
        return swapped

    # -- saving and resuming ------------------------------------------------------------------

    def state_dict(self) -> dict:
        """DoPr's per-layer state (step, EMA statistics, cached inverse, counters) and the base's."""
        state = super().state_dict()
        state["base"] = self.base.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        if "base" not in state_dict:
            raise ValueError("Not a DoPr state dict: the 'base' entry (base optimizer state) is missing")
        base_state = state_dict.pop("base")
        mine = self.param_groups[0]
        for key in ("conv_form", "max_factor_dim"):  # they decide which layers have which factor
            saved = state_dict["param_groups"][0].get(key, mine[key]) if state_dict.get("param_groups") else mine[key]
            if saved != mine[key]:
                raise ValueError(f"This DoPr state was saved with {key}={saved!r}, this optimizer has "
                                 f"{key}={mine[key]!r}: build it with the same {key} to resume")
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # files written before these options existed
            group.setdefault("conv_form", mine["conv_form"])
            group.setdefault("max_factor_dim", mine["max_factor_dim"])
        self.base.load_state_dict(base_state)
        # torch gave each layer its own tensors (cast to the parameter's dtype, possibly the caller's own):
        # stack them afresh per group, in our dtypes, and point the layers' entries at the rows.
        for group in self._groups:
            states = [self.state[layer.weight] for layer in group.layers]
            group.state = {}
            if not states[0]:
                continue
            device = group.sums.outer.device
            for key, dtype in STACKED_STATE.items():
                if key in states[0]:
                    group.state[key] = torch.stack([torch.as_tensor(state[key]).to(device=device, dtype=dtype)
                                                    for state in states])
            # Files written before these entries existed:
            for key in FIRST_STATE:
                group.state.setdefault(key, _first_state(key, len(states), device))
            if "inverse" in group.state:
                group.state.setdefault("has_inverse", torch.ones(len(states), dtype=torch.bool, device=device))
            self._point_rows(group)
        self._steps_done = self.state[self._layers[0].weight].get("step", 0) if self._layers else 0
        self._recording = self._records_now()


def _swap_gradient(param: Tensor, update: Tensor) -> tuple[Tensor, Tensor, bool]:
    """Give ``param`` the gradient ``update`` for the base step; returns (param, raw gradient, in place) to
    restore it. Inside a compiled step the update is written into the gradient's storage (a copy of the raw
    one kept): assigning ``.grad`` there is a mutation of the parameter that makes dynamo break the graph
    before the base step."""
    raw = param.grad
    if raw is not None and torch.compiler.is_compiling():
        kept = raw.clone()
        raw.copy_(update)
        return param, kept, True
    param.grad = update
    return param, raw, False


def activation_precondition(
    weight_grads: list[Tensor | None],
    bias_grads: list[Tensor | None],
    state: dict[str, Tensor],
    *,
    sums: InputSums | None,
    damping: float,
    cov_ema: float,
    cache_inverse: bool,
    max_damping_retries: int,
    apply_inverse: bool = False,
    cached_blocks: list[tuple[Tensor, ...]] | None = None,
) -> list[tuple[Tensor, Tensor | None] | None]:
    r"""The AP step for a group of layers of one factor width: :math:`\tilde M = \tilde G (\tilde\Sigma + \lambda I)^{-1}`
    per layer, the factorizations done as one batched call.

    Per layer ``i``: ``weight_grads[i]`` (``None``: no gradient this step, the layer's result is
    ``None``), ``bias_grads[i]`` for a layer with a trained bias (the homogeneous coordinate is then
    folded in), else ``None``. ``state`` is the group's state, stacked with the layers first (keys of
    ``STACKED_STATE``: ``damping_scale``, the counters ``damping_retries`` and ``skipped``; ``sigma``
    when ``cov_ema > 0``; ``inverse`` and ``has_inverse`` when ``cache_inverse``), updated in place,
    the entries a first refresh creates added to it. ``sums`` holds the group's input statistics when
    the factorization is refreshed now (they are spent: their storage is reused), else ``None`` (the
    cached inverses are applied). ``cached_blocks``: ``inverse_blocks`` of ``state["inverse"]``, if the
    caller keeps them (views: they follow the in-place refresh).
    :math:`(\tilde\Sigma + \lambda I)^{-1}` is applied by two triangular solves with the Cholesky factor,
    or (``apply_inverse``, and always when ``cache_inverse``) as one matmul with the inverse formed
    from the factor. No host synchronization. Returns each layer's (weight, bias) parts of
    :math:`\tilde M`; where no usable statistics exist they are the raw gradient (``skipped`` counts
    those layer-steps).
    """
    with_grad = [i for i, grad in enumerate(weight_grads) if grad is not None]
    if sums is None and not (cache_inverse and "inverse" in state):
        _count_skipped(state["skipped"], None, with_grad, len(weight_grads))  # nothing recorded yet: not a failure
        return [None if grad is None else (grad, bias) for grad, bias in zip(weight_grads, bias_grads)]
    if sums is not None:
        sigma = sums.second_moment()  # the spent sums' storage: damped_factor may overwrite it
        if cov_ema > 0.0:
            if "sigma" in state:
                running = state["sigma"]
                # A refresh without recorded inputs keeps the running average as it was (weight 0).
                weight = (sums.count > 0).to(sigma.dtype).mul_(1.0 - cov_ema)[:, None, None]
                running.lerp_(sigma, weight)
                sigma.copy_(running)  # damped_factor writes λ into the diagonal of its input
            else:
                state["sigma"] = sigma.clone()
        scale = state["damping_scale"]
        cholesky, usable, failed = damped_factor(sigma, damping, scale)
        state["damping_retries"].add_(failed)
        scale.addcmul_(scale, failed, value=9.0).clamp_(max=10.0 ** max_damping_retries)  # tenfold where failed
        if cache_inverse:
            inverse = inverse_from_factor(cholesky)  # the identity where the statistics are unusable
            if "inverse" in state:  # then the previous inverse is kept instead, in place
                torch.where(usable[:, None, None], inverse, state["inverse"], out=state["inverse"])
                state["has_inverse"].logical_or_(usable)
            else:
                # Row-major (inverse_from_factor's is): a resumed run, whose loaded state is row-major,
                # then multiplies with the same layout, hence the same rounding.
                state["inverse"] = inverse.contiguous()
                state["has_inverse"] = usable.clone()

    # Unusable statistics left an identity factor (or inverse): the update is then the raw gradient,
    # with no data-dependent branch and no extra pass over the gradient.
    homogeneous = bias_grads[0] is not None  # one group: all layers have a trained bias, or none
    if cache_inverse:
        inverse, usable = state["inverse"], state["has_inverse"]
        blocks = cached_blocks or inverse_blocks(inverse, inverse.shape[-1] - homogeneous, homogeneous)
    elif apply_inverse:
        blocks = inverse_blocks(inverse_from_factor(cholesky), cholesky.shape[-1] - homogeneous, homogeneous)
    else:
        factors = cholesky.unbind()
    _count_skipped(state["skipped"], ~usable, with_grad, len(weight_grads))
    updates: list[tuple[Tensor, Tensor | None] | None] = [None] * len(weight_grads)
    for i in with_grad:
        if cache_inverse or apply_inverse:
            updates[i] = _times_inverse(weight_grads[i], bias_grads[i], blocks[i])
        else:
            updates[i] = _solve(weight_grads[i], bias_grads[i], factors[i])
    return updates


def _count_skipped(skipped: Tensor, unusable: Tensor | None, with_grad: list[int], layers: int) -> None:
    """Add the layer-steps whose raw gradient goes to the base (``unusable``; ``None``: all of them),
    counting only layers with a gradient."""
    if len(with_grad) == layers:
        skipped.add_(1 if unusable is None else unusable)
    else:  # rare: some layers got no gradient this step
        for i in with_grad:
            skipped[i].add_(1 if unusable is None else unusable[i])


def _float32(tensor: Tensor) -> Tensor:
    return tensor if tensor.dtype == torch.float32 else tensor.float()


def _solve(weight_grad: Tensor, bias_grad: Tensor | None, cholesky: Tensor) -> tuple[Tensor, Tensor | None]:
    r""":math:`[G_W\ g_b]\,(LL^\top)^{-1}` by two triangular solves, split back into weight and bias parts."""
    grad = _float32(weight_grad)
    if bias_grad is not None:
        grad = torch.cat([grad, _float32(bias_grad)[:, None]], dim=1)
    update = solve_right(grad, cholesky)
    if update.dtype != weight_grad.dtype:
        update = update.to(weight_grad.dtype)
    if bias_grad is None:
        return update, None
    # Contiguous parts: the base's foreach kernels are slower on strided gradients.
    d_in = weight_grad.shape[1]
    return update[:, :d_in].contiguous(), update[:, d_in].contiguous()


def inverse_blocks(inverse: Tensor, d_in: int, homogeneous: bool) -> list[tuple[Tensor, ...]]:
    r"""Views of each layer's inverse :math:`S` (a (layers, d, d) stack) by the blocks ``_times_inverse`` multiplies
    with: :math:`(S_{11}, S_{21}, S_{12}, S_{22})` with the homogeneous coordinate, else :math:`(S,)`."""
    if not homogeneous:
        return [(row,) for row in inverse.unbind()]
    return [(row[:d_in, :d_in], row[d_in, :d_in], row[:d_in, d_in], row[d_in, d_in]) for row in inverse.unbind()]


def _times_inverse(weight_grad: Tensor, bias_grad: Tensor | None,
                   blocks: tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None]:
    r""":math:`[G_W\ g_b]\,S` by the blocks of the inverse :math:`S` (``inverse_blocks``), never forming
    :math:`[G_W\ g_b]`: :math:`M_W = G_W S_{11} + g_b S_{21}` and :math:`m_b = G_W S_{12} + g_b S_{22}` (no
    concatenation of the gradient, no copies of the result's parts)."""
    grad = _float32(weight_grad)
    if bias_grad is None:
        update = grad @ blocks[0]
        return (update if update.dtype == weight_grad.dtype else update.to(weight_grad.dtype)), None
    top_left, bottom_row, right_column, corner = blocks
    bias = _float32(bias_grad)
    weight_update = torch.addmm(torch.outer(bias, bottom_row), grad, top_left)
    bias_update = torch.addmv(bias * corner, grad, right_column)
    if weight_update.dtype != weight_grad.dtype:
        weight_update, bias_update = weight_update.to(weight_grad.dtype), bias_update.to(bias_grad.dtype)
    return weight_update, bias_update
