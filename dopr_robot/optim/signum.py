"""Signum: the sign of a momentum average (Bernstein et al., "signSGD", ICML 2018)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.optim import Optimizer


class Signum(Optimizer):
    r"""Sign of momentum, with decoupled weight decay.

    .. math::
        m_t &= \beta\, m_{t-1} + (1 - \beta)\, g_t \\
        \theta_t &= (1 - \eta \lambda)\, \theta_{t-1} - \eta\, \operatorname{sign}(m_t)

    Every coordinate moves by exactly ``lr`` (plus decay), so the update size does not depend on
    the gradient's scale: the property DoPr relies on to keep the base learning rate valid.

    Args:
        params: parameters or parameter groups.
        lr: learning rate :math:`\eta` (default 1e-3).
        momentum: :math:`\beta` in [0, 1); 0 gives plain signSGD (default 0.9).
        weight_decay: decoupled decay :math:`\lambda` (default 0).
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0):
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr} (must be >= 0)")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid momentum: {momentum} (must be in [0, 1))")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay} (must be >= 0)")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, momentum_buffers = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    # m_t, the running average whose sign is the update.
                    state["momentum_buffer"] = torch.zeros_like(p)
                params.append(p)
                grads.append(p.grad)
                momentum_buffers.append(state["momentum_buffer"])
            signum(
                params,
                grads,
                momentum_buffers,
                lr=group["lr"],
                momentum=group["momentum"],
                weight_decay=group["weight_decay"],
            )
        return loss


def signum(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> None:
    """Functional Signum update, in place on ``params`` and ``momentum_buffers``."""
    for param, grad, buf in zip(params, grads, momentum_buffers):
        buf.lerp_(grad, 1.0 - momentum)
        if weight_decay != 0.0:
            param.mul_(1.0 - lr * weight_decay)
        param.add_(torch.sign(buf), alpha=-lr)
