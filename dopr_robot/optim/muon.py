"""Muon for the weight matrices of linear layers, AdamW for every other parameter.

``torch.optim.Muon`` accepts 2-D parameters only, and is meant for the matrices of linear maps, not
for embeddings, positional encodings, norms or biases. :class:`MuonWithAdamW` is the usual pairing:
one torch ``Muon`` and one torch ``AdamW``, both unmodified, behind one optimizer interface (one
``step``, one ``state_dict``, learning-rate schedulers act on it as on any optimizer).
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn
from torch.optim import AdamW, Muon, Optimizer

from dopr_robot.optim.graph_step import step_in_graph


def linear_weights_and_rest(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split the trainable parameters of ``model`` into ``nn.Linear`` weights and all others.

    A weight shared by several modules (weight tying) counts as a linear weight only if every
    module holding it is an ``nn.Linear``.
    """
    linear_ids: set[int] = set()
    other_ids: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, nn.Linear) and name == "weight":
                linear_ids.add(id(param))
            else:
                other_ids.add(id(param))
    linear, rest = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        is_linear_weight = id(param) in linear_ids and id(param) not in other_ids
        (linear if is_linear_weight else rest).append(param)
    return linear, rest


class MatrixWithAdamW(Optimizer):
    """A matrix optimizer on linear-layer weights, AdamW (same lr and weight decay) on everything else.

    The shared half of :class:`MuonWithAdamW` and ``AdaMuonWithAdamW``: subclasses name their matrix
    optimizer (``matrix_name``, also the attribute that holds it and its key in ``state_dict``) and
    build it (``_build_matrix``); the split of parameters, the step (both halves follow this
    optimizer's lr and weight decay, as schedulers set them) and saving are here.
    """

    matrix_name = "matrix"

    def __init__(self, model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                 adamw_eps: float, **matrix_kwargs):
        if not isinstance(model, nn.Module):
            raise ValueError(f"{type(self).__name__} takes the model (an nn.Module), got {type(model).__name__}")
        matrices, rest = linear_weights_and_rest(model)
        super().__init__(matrices + rest, dict(lr=lr, weight_decay=weight_decay))
        matrix = self._build_matrix(matrices, lr=lr, weight_decay=weight_decay, **matrix_kwargs) if matrices else None
        setattr(self, self.matrix_name, matrix)
        self.adamw = AdamW(rest, lr=lr, weight_decay=weight_decay, betas=betas, eps=adamw_eps) if rest else None

    def _build_matrix(self, matrices: list[nn.Parameter], **kwargs) -> Optimizer:
        raise NotImplementedError

    def _parts(self) -> Iterable[Optimizer]:
        return [opt for opt in (getattr(self, self.matrix_name), self.adamw) if opt is not None]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Schedulers and users change this optimizer's group; the two halves follow it. Written only when
        # changed: a compiled step that writes into a part's group makes dynamo guard that group's
        # `capturable`, which dynamo itself sets while tracing the part's step, so the step compiled twice.
        lr, weight_decay = self.param_groups[0]["lr"], self.param_groups[0]["weight_decay"]
        for part in self._parts():
            group = part.param_groups[0]
            if group["lr"] is not lr or group["weight_decay"] != weight_decay:
                group["lr"], group["weight_decay"] = lr, weight_decay
            step_in_graph(part)  # compiled, both halves stay in the caller's graph (the parts have no hooks)
        return loss

    def state_dict(self) -> dict:
        state = super().state_dict()
        matrix = getattr(self, self.matrix_name)
        state[self.matrix_name] = matrix.state_dict() if matrix is not None else None
        state["adamw"] = self.adamw.state_dict() if self.adamw is not None else None
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        if self.matrix_name not in state_dict or "adamw" not in state_dict:
            raise ValueError(f"Not a state dict of {type(self).__name__}: the '{self.matrix_name}' and 'adamw' "
                             "entries are missing")
        matrix_state, adamw_state = state_dict.pop(self.matrix_name), state_dict.pop("adamw")
        super().load_state_dict(state_dict)
        if getattr(self, self.matrix_name) is not None:
            getattr(self, self.matrix_name).load_state_dict(matrix_state)
        if self.adamw is not None:
            self.adamw.load_state_dict(adamw_state)


class MuonWithAdamW(MatrixWithAdamW):
    r"""Muon on linear-layer weights, AdamW (same lr and weight decay) on everything else.

    Muon (torch.optim.Muon): momentum :math:`B_t = \mu B_{t-1} + (1 - \mu) G_t` (torch's EMA form),
    update :math:`O_t = \mathrm{NewtonSchulz}((1 - \mu) G_t + \mu B_t)` (Nesterov), then
    :math:`W \leftarrow (1 - \eta\lambda) W - \eta'\, O_t` with :math:`\eta'` from ``adjust_lr_fn``.
    The default ``adjust_lr_fn="match_rms_adamw"`` scales Muon's step to AdamW's update RMS, so one
    learning rate serves both halves (and the learning rate tuned for AdamW carries over).

    Args:
        model: the module whose parameters are optimized.
        lr, weight_decay: shared by both halves.
        momentum, nesterov, ns_steps, adjust_lr_fn: Muon's (see torch.optim.Muon).
        betas, eps: AdamW's, for the non-matrix parameters.
    """

    matrix_name = "muon"

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = "match_rms_adamw",
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        super().__init__(model, lr, weight_decay, betas, eps, momentum=momentum, nesterov=nesterov,
                         ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)

    def _build_matrix(self, matrices: list[nn.Parameter], **kwargs) -> Optimizer:
        return Muon(matrices, **kwargs)
