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

Other layers reach this form through their adapter (``adapters.py``): a convolution is a linear map
of its unfolded input patches, or of its input channels at every kernel tap.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class InputSums:
    r"""Running sums of the input rows of ``layers`` layers of one factor width since the last optimizer
    step (not part of saved state), stacked so that their factorizations run as one batched call.

    ``outer[i]`` holds :math:`\sum \tilde z \tilde z^\top` of layer ``i``: with the homogeneous coordinate its
    last row is :math:`Z^\top 1` (mirrored into the last column when the second moment is formed) and its
    corner is :math:`n`, the same storage as ``count[i]``.
    """

    def __init__(self, d_in: int, homogeneous: bool, device: torch.device | None = None, layers: int = 1):
        self.d_in = d_in
        self.homogeneous = homogeneous
        dim = d_in + 1 if homogeneous else d_in
        self.outer = torch.zeros(layers, dim, dim, device=device, dtype=torch.float32)
        # With the homogeneous coordinate the count is the corner itself (one add keeps both).
        self.count = self.outer[:, d_in, d_in] if homogeneous else torch.zeros(layers, device=device)
        # Views made once: a forward hook, and forming the second moment, then run a handful of torch calls.
        self._gram = [block[:d_in, :d_in] for block in self.outer]
        self._input_sums = [block[d_in, :d_in] for block in self.outer] if homogeneous else None
        self._counts = list(self.count)
        self._count_blocks = self.outer[:, d_in:, d_in:] if homogeneous else self.count.view(layers, 1, 1)
        if homogeneous:
            self._last_row, self._last_column = self.outer[:, d_in, :d_in], self.outer[:, :d_in, d_in]

    def add_(self, inputs: Tensor, index: int = 0) -> None:
        """Add a batch of layer ``index``'s inputs, shape (..., d_in); leading axes (batch, tokens) are rows.

        Only the last row gets :math:`Z^\top 1`; ``second_moment`` mirrors it into the last column."""
        rows = inputs.detach()
        if rows.dim() != 2:
            rows = rows.reshape(-1, self.d_in)
        if rows.dtype != torch.float32:
            rows = rows.float()
        self._gram[index].addmm_(rows.mT, rows)
        if self.homogeneous:
            self._input_sums[index].add_(rows.sum(dim=0))
        self._counts[index].add_(rows.shape[0])

    def zero_(self) -> None:
        self.outer.zero_()
        if not self.homogeneous:
            self.count.zero_()

    def second_moment(self) -> Tensor:
        r""":math:`\tilde\Sigma = \frac1n \sum_i \tilde z_i \tilde z_i^\top` per layer, (layers, d, d), computed
        in place of the sums and returned (``outer`` itself): the sums are spent once the factorization
        is refreshed (the optimizer zeroes them after its step), and a refresh then allocates nothing here.
        ``count`` then reads 1 where inputs were recorded (0 where none) when it is the corner."""
        counts = self._count_blocks.clamp(min=1.0)  # a copy, taken before the corner is divided
        if self.homogeneous:
            self._last_column.copy_(self._last_row)
        return self.outer.div_(counts)


def damped_factor(sigma: Tensor, relative_damping: float, damping_scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Cholesky factors of :math:`\tilde\Sigma + \lambda I`, :math:`\lambda = s\,\gamma\,\mathrm{tr}(\tilde\Sigma)/d`,
    for one matrix (d, d) or a stack (..., d, d), with every outcome kept on the device (no host
    synchronization).

    ``sigma`` (symmetric) is overwritten (with the factor, or only its diagonal): pass a tensor of your own.
    ``damping_scale`` :math:`s` is each matrix's damping multiplier (shape ``sigma.shape[:-2]``, 1 until a
    factorization fails). :math:`\lambda` never falls below :math:`10^{-6}\,\mathrm{tr}/d`, so
    ``relative_damping=0`` still factors a rank-deficient matrix. Returns ``(cholesky, usable, failed)``,
    the last two of shape ``sigma.shape[:-2]``:

    - ``usable`` (bool): the statistics can be preconditioned with at all (finite, positive trace).
      Where not, ``cholesky`` is the identity, so applying it leaves the raw gradient.
    - ``failed`` (bool): usable, but the factorization broke down (float32 round-off on a
      near-singular matrix, or a NaN off the diagonal). ``cholesky`` is then the diagonal (Jacobi)
      factor :math:`\mathrm{diag}(\tilde\Sigma + \lambda I)^{1/2}`, which always exists, and the
      caller raises :math:`s` tenfold for the next factorization of that matrix.
    """
    diagonal = sigma.diagonal(dim1=-2, dim2=-1)
    mean_eigenvalue = diagonal.mean(dim=-1, keepdim=True)
    usable = (mean_eigenvalue > 0) & (mean_eigenvalue < math.inf)  # NaN compares false; shape (..., 1) until returned
    diagonal.addcmul_(mean_eigenvalue, damping_scale.unsqueeze(-1), value=max(relative_damping, 1e-6))
    # Where usable, the damped diagonal is finite and positive; elsewhere the fallback is the identity
    # (no preconditioning without statistics). Taken before the factorization, which may overwrite Σ.
    jacobi = torch.where(usable, diagonal.clamp(min=torch.finfo(sigma.dtype).tiny).sqrt_(), 1.0)
    # Σ is symmetric: its transpose is the same matrix, and the transpose of a row-major stack is the
    # column-major layout LAPACK factors in (LAPACK reads one triangle: the upper one of ``sigma``'s rows).
    # cholesky_ex copies its input into the factor's storage (column-major) first: from the transpose that
    # copy keeps the layout, from Σ itself it transposes, and costs more (CPU, one thread, seven 257-wide
    # matrices: 0.2-0.4 ms against 0.5-2 ms). Eager, Σ's own storage becomes the factor's (the copy is
    # then an in-place zeroing of the other triangle, and nothing is allocated). Compiled, the factor gets
    # its own storage: dynamo breaks the graph at an ``out=`` that is not contiguous (the transpose is not).
    transpose = sigma.mT
    if torch.compiler.is_compiling() or not sigma.is_contiguous():
        factor, info = torch.linalg.cholesky_ex(transpose)
    else:
        info = torch.empty(sigma.shape[:-2], dtype=torch.int32, device=sigma.device)
        factor, info = torch.linalg.cholesky_ex(transpose, out=(transpose, info))
    factor_diagonal = factor.diagonal(dim1=-2, dim2=-1)
    # A NaN anywhere in the lower triangle reaches the diagonal of the factor: one sum checks it.
    ok = (factor_diagonal.sum(dim=-1, keepdim=True) < math.inf) & (info == 0).unsqueeze(-1) & usable
    broken = ~ok
    # Keep the good factors and zero the others, then put the fallback on their diagonal. A good factor
    # holds no NaN or inf (they would have reached its diagonal), so clearing the non-finite values
    # after the multiplication touches only the zeroed ones (NaN * 0 is NaN): two cheap passes where
    # a masked_fill_ with a per-matrix mask costs twice as much.
    factor.mul_(ok.unsqueeze(-1)).nan_to_num_(0.0, 0.0, 0.0)
    factor_diagonal.addcmul_(jacobi, broken)
    return factor, usable.squeeze(-1), (usable & broken).squeeze(-1)


def solve_right(grad: Tensor, cholesky: Tensor) -> Tensor:
    r""":math:`\tilde G (LL^\top)^{-1}` for a (d_out, d) gradient, by two triangular solves.

    Solving from the right (``left=False``) keeps the gradient's row-major layout. With MKL on CPU
    (256 x 257 gradient) it is the fastest form measured at one thread (0.64 ms, against 1.39 ms for
    the same solves on transposed views, which win at two threads, 0.71 against 0.80 ms) and ~10%
    faster than ``torch.cholesky_solve`` on the transpose.
    """
    half = torch.linalg.solve_triangular(cholesky.mT, grad, upper=True, left=False)  # G L^-T
    return torch.linalg.solve_triangular(cholesky, half, upper=False, left=False)  # G L^-T L^-1


@torch.compiler.assume_constant_result
def _threads() -> int:
    """torch's CPU threads, read as a constant of a compiled step (dynamo cannot trace the call)."""
    return torch.get_num_threads()


# How inverse_from_factor may form (LL^T)^-1: LAPACK's potri, potrs on the identity, or a triangular
# inverse times its transpose (triangular solve and matmul: no kernel that reports an info to the host).
INVERSE_METHODS = ("cholesky_inverse", "cholesky_solve", "triangular")


def inverse_from_factor(cholesky: Tensor, method: str = "auto") -> Tensor:
    r""":math:`(LL^\top)^{-1}` from Cholesky factors :math:`L` (d, d) or (..., d, d), row-major.

    ``method`` (``INVERSE_METHODS``, or ``"auto"``, the fastest measured where the step runs):

    - ``cholesky_inverse`` (LAPACK potri): the fastest on one CPU thread, 0.58 ms for three 257-wide
      factors against 0.94 ms for solves of the identity (this project's 2-core machine).
    - ``cholesky_solve`` of the identity (potrs): with more CPU threads, where MKL's potri gains little,
      0.54 ms against 0.83 ms (``benchmarks/optimizer_overhead.py`` prints both).
    - ``triangular``: :math:`L^{-1}` by one triangular solve, then :math:`L^{-\top} L^{-1}` as one matmul.
      ``auto`` takes it on GPUs: there torch sends a batch of factors (layers of one width) given to
      ``cholesky_inverse`` or ``cholesky_solve`` to MAGMA, whose batched solve returns its status as a
      host integer, outside what ``torch.cuda.set_sync_debug_mode`` watches; cuBLAS's triangular solve
      and matmul report nothing. On the CPU it is slower (0.67 ms at two threads).

    All three agree with a float64 inverse to the same relative error (~3e-7). The LAPACK kernels write
    column-major; the inverse is symmetric (to round-off), so their transpose is returned, a view,
    rather than a transposing copy.
    """
    if method == "auto":
        if cholesky.device.type != "cpu":
            method = "triangular"
        else:
            method = "cholesky_solve" if _threads() > 1 else "cholesky_inverse"
    if method in ("triangular", "cholesky_solve"):
        identity = torch.eye(cholesky.shape[-1], dtype=cholesky.dtype, device=cholesky.device).expand_as(cholesky)
    if method == "triangular":
        lower_inverse = torch.linalg.solve_triangular(cholesky, identity, upper=False)
        return lower_inverse.mT @ lower_inverse
    if method == "cholesky_solve":
        inverse = torch.cholesky_solve(identity, cholesky)
    elif method == "cholesky_inverse":
        inverse = torch.cholesky_inverse(cholesky)
    else:
        raise ValueError(f"Unknown inverse method {method!r}; valid: auto, {', '.join(INVERSE_METHODS)}")
    return inverse.mT if inverse.mT.is_contiguous() else inverse
