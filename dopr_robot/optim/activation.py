r"""Activation preconditioning (AP): input statistics of a linear layer and the damped solve.

For a linear layer :math:`y = W z + b` the bias is folded in with a homogeneous coordinate,
:math:`\tilde z = [z; 1]`, :math:`\tilde W = [W\ b]`. Over the :math:`n` input rows seen since the
last optimizer step,

.. math::
    \tilde\Sigma = \frac1n \sum_i \tilde z_i \tilde z_i^\top
                 = \frac1n \begin{bmatrix} Z^\top Z & Z^\top 1 \\ 1^\top Z & n \end{bmatrix},
    \qquad
    \lambda = \gamma\, \frac{\operatorname{tr}\tilde\Sigma}{d_{in} + 1},
    \qquad
    \tilde M = \tilde G\, (\tilde\Sigma + \lambda I)^{-1}.

Only sums are accumulated (:math:`Z^\top Z`, :math:`Z^\top 1`, :math:`n`), so several forwards
before one step (gradient accumulation) and several processes (an all-reduce of the sums) give the
same :math:`\tilde\Sigma` as one forward over the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class InputSums:
    """Running sums of a layer's inputs since the last optimizer step (not part of saved state)."""

    sum_outer: Tensor  # (d_in, d_in): Z^T Z
    sum_rows: Tensor  # (d_in,): Z^T 1
    count: Tensor  # (): n, the number of input rows

    @classmethod
    def zeros(cls, d_in: int, device: torch.device) -> "InputSums":
        return cls(
            torch.zeros(d_in, d_in, device=device, dtype=torch.float32),
            torch.zeros(d_in, device=device, dtype=torch.float32),
            torch.zeros((), device=device, dtype=torch.float32),
        )

    def add_(self, inputs: Tensor) -> None:
        """Add a batch of layer inputs of shape (..., d_in); leading axes (batch, tokens) are rows."""
        rows = inputs.detach().reshape(-1, inputs.shape[-1]).float()
        self.sum_outer.addmm_(rows.T, rows)
        self.sum_rows.add_(rows.sum(dim=0))
        self.count.add_(rows.shape[0])

    def zero_(self) -> None:
        self.sum_outer.zero_()
        self.sum_rows.zero_()
        self.count.zero_()

    def flat(self) -> list[Tensor]:
        return [self.sum_outer, self.sum_rows, self.count]


def second_moment(sums: InputSums, homogeneous: bool) -> Tensor:
    r"""The uncentered second moment :math:`\tilde\Sigma` of the inputs, bias coordinate last.

    Returns a (d_in + 1)² matrix when ``homogeneous`` (the layer has a trained bias), else d_in².
    """
    n = sums.count.clamp(min=1.0)
    if not homogeneous:
        return sums.sum_outer / n
    d_in = sums.sum_rows.shape[0]
    sigma = sums.sum_outer.new_empty(d_in + 1, d_in + 1)
    sigma[:d_in, :d_in] = sums.sum_outer / n
    mean = sums.sum_rows / n
    sigma[:d_in, d_in] = mean
    sigma[d_in, :d_in] = mean
    sigma[d_in, d_in] = 1.0
    return sigma


@dataclass
class DampedFactor:
    """Cholesky factor of :math:`\\tilde\\Sigma + \\lambda I`, with how it was obtained."""

    cholesky: Tensor | None  # lower-triangular L, or None when no usable factor exists
    damping: float  # the absolute lambda that succeeded
    retries: int  # how many times lambda had to be raised


def damped_cholesky(sigma: Tensor, relative_damping: float, max_retries: int = 8) -> DampedFactor:
    r"""Factor :math:`\tilde\Sigma + \lambda I` with :math:`\lambda = \gamma\,\mathrm{tr}(\tilde\Sigma)/d`.

    On a failed factorization (float32 round-off on a near-singular matrix) the damping is raised
    tenfold and the factorization retried, up to ``max_retries`` times. A matrix with a non-finite
    entry, or with zero trace, yields ``cholesky=None``: the caller then leaves the gradient
    unpreconditioned rather than emit NaN.
    """
    dim = sigma.shape[0]
    if not bool(torch.isfinite(sigma).all()):
        return DampedFactor(None, float("nan"), 0)
    trace = float(torch.diagonal(sigma).sum())
    if trace <= 0.0:
        return DampedFactor(None, 0.0, 0)
    damping = relative_damping * trace / dim
    identity = torch.eye(dim, dtype=sigma.dtype, device=sigma.device)
    for attempt in range(max_retries + 1):
        factor, info = torch.linalg.cholesky_ex(sigma + damping * identity)
        if int(info) == 0 and bool(torch.isfinite(factor).all()):
            return DampedFactor(factor, damping, attempt)
        # Tenfold, from a small floor so that damping=0 can recover too.
        damping = max(10.0 * damping, 1e-6 * trace / dim)
    return DampedFactor(None, damping, max_retries + 1)


def solve_right(grad: Tensor, cholesky: Tensor) -> Tensor:
    r""":math:`\tilde G (LL^\top)^{-1}` for a (d_out, d) gradient, by two triangular solves."""
    return torch.cholesky_solve(grad.T, cholesky).T
