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


class InputSums:
    r"""Running sums of a layer's inputs since the last optimizer step (not part of saved state).

    ``outer`` holds :math:`\sum_i \tilde z_i \tilde z_i^\top` directly: with the homogeneous
    coordinate its last row and column are :math:`Z^\top 1` and its corner is :math:`n`.
    """

    def __init__(self, d_in: int, homogeneous: bool, device: torch.device | None = None):
        self.d_in = d_in
        self.homogeneous = homogeneous
        dim = d_in + 1 if homogeneous else d_in
        self.outer = torch.zeros(dim, dim, device=device, dtype=torch.float32)
        self.count = torch.zeros((), device=device, dtype=torch.float32)

    def add_(self, inputs: Tensor) -> None:
        """Add a batch of layer inputs of shape (..., d_in); leading axes (batch, tokens) are rows."""
        rows = inputs.detach().reshape(-1, self.d_in).float()
        d = self.d_in
        self.outer[:d, :d].addmm_(rows.T, rows)
        if self.homogeneous:
            column_sums = rows.sum(dim=0)
            self.outer[:d, d].add_(column_sums)
            self.outer[d, :d].add_(column_sums)
            self.outer[d, d].add_(rows.shape[0])
        self.count.add_(rows.shape[0])

    def zero_(self) -> None:
        self.outer.zero_()
        self.count.zero_()

    def second_moment(self) -> Tensor:
        r"""A new tensor :math:`\tilde\Sigma = \frac1n \sum_i \tilde z_i \tilde z_i^\top`."""
        return self.outer / self.count.clamp(min=1.0)


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
    trace, or zero trace, yields ``cholesky=None``: the caller then leaves the gradient
    unpreconditioned rather than emit NaN. (A NaN off the diagonal makes every retry fail the
    finiteness check of the factor, with the same outcome.)
    """
    dim = sigma.shape[0]
    trace = float(torch.diagonal(sigma).sum())
    if not trace > 0.0:  # zero, or NaN/Inf
        return DampedFactor(None, trace, 0)
    damping = relative_damping * trace / dim
    for attempt in range(max_retries + 1):
        damped = sigma.clone()
        damped.diagonal().add_(damping)
        factor, info = torch.linalg.cholesky_ex(damped)
        # A NaN anywhere in the lower triangle reaches the diagonal of the factor: checking the
        # diagonal catches it at a fraction of the cost of checking the whole matrix.
        if int(info) == 0 and bool(torch.isfinite(factor.diagonal()).all()):
            return DampedFactor(factor, damping, attempt)
        # Tenfold, from a small floor so that damping=0 can recover too.
        damping = max(10.0 * damping, 1e-6 * trace / dim)
    return DampedFactor(None, damping, max_retries + 1)


def solve_right(grad: Tensor, cholesky: Tensor) -> Tensor:
    r""":math:`\tilde G (LL^\top)^{-1}` for a (d_out, d) gradient, by two triangular solves.

    Solving from the right (``left=False``) keeps the gradient's row-major layout; on CPU it is
    also ~10% faster than ``torch.cholesky_solve`` on the transpose.
    """
    half = torch.linalg.solve_triangular(cholesky.T, grad, upper=True, left=False)  # G L^-T
    return torch.linalg.solve_triangular(cholesky, half, upper=False, left=False)  # G L^-T L^-1
