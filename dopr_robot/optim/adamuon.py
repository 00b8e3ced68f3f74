r"""AdaMuon: Muon's orthogonalized momentum, normalized element-wise by a second moment of the
orthogonalized matrix and rescaled to AdamW's update RMS.

Si, Zhang, Shen, "AdaMuon: Adaptive Muon Optimizer", arXiv 2507.11005 (v2/v3, 2025). Like
``torch.optim.Muon`` it acts on 2-D matrices only; :class:`AdaMuonWithAdamW` pairs it with an
unmodified ``torch.optim.AdamW`` for every other parameter, as :class:`MuonWithAdamW` does for Muon.

Sources read (nothing copied):

- the paper's Algorithm 1 (v2/v3; reproduced as ``src/algorithm.png`` in the authors' repository
  https://github.com/Chongjie-Si/AdaMuon, commit 5b99dd0, Aug 2025) and the v2/v3 abstract
  (https://arxiv.org/abs/2507.11005): sign-stabilized orthogonal direction, element-wise second
  momentum of it, RMS-aligned rescaling :math:`\gamma_t = 0.2\sqrt{mn}/\lVert\hat O_t\rVert_F`;
- the authors' code at that commit, ``gpt2/models/optimizers/adamuon.py`` and the ``adamuon``
  branch of ``megatron/core/optimizer/muon.py`` (defaults: Nesterov, momentum 0.95, 5 Newton–Schulz
  steps, :math:`\varepsilon = 10^{-8}`); and their first release ``adamuon.py`` (commit 3b84e03,
  Jul 2025, paper v1), which had no sign step and a separate, bias-corrected :math:`\beta_2 = 0.999`;
- ``torch/optim/_muon.py`` (torch 2.9+): the quintic Newton–Schulz coefficients and the momentum
  convention of :class:`torch.optim.Muon`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from dopr_robot.optim.muon import MatrixWithAdamW

# Keller Jordan's quintic Newton–Schulz coefficients, used by torch.optim.Muon and by the AdaMuon
# authors alike; they push every singular value into roughly [0.7, 1.2] in 5 steps.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7  # X / (‖X‖_F + 1e-7) before the iteration, as in the authors' and Jordan's code
# Update RMS of the rescaled step: AdamW's typical update RMS (Moonlight, arXiv 2502.16982; the
# AdaMuon paper's γ_t = 0.2·sqrt(mn)/‖Ô_t‖_F), so AdamW's learning rate carries over.
MATCHED_ADAMW_RMS = 0.2


class AdaMuon(Optimizer):
    r"""AdaMuon for 2-D weight matrices (Algorithm 1 of arXiv 2507.11005 v2/v3).

    For a matrix :math:`W \in \mathbb R^{m \times n}` with gradient :math:`G_t`:

    .. math::
        M_t &= \beta M_{t-1} + (1 - \beta)\, G_t,
            \qquad U_t = \begin{cases} (1-\beta)\, G_t + \beta M_t & \text{nesterov} \\
                                        M_t & \text{otherwise} \end{cases} \\
        O_t &= \mathrm{NS}_T\big(\operatorname{sign}(U_t)\big)
            \quad\text{(quintic Newton–Schulz, } T \text{ steps)} \\
        V_t &= \beta V_{t-1} + (1 - \beta)\, O_t \odot O_t,
            \qquad \hat O_t = O_t \oslash (\sqrt{V_t} + \varepsilon) \\
        \gamma_t &= 0.2 \sqrt{mn} \,/\, (\lVert \hat O_t \rVert_F + \varepsilon) \\
        W_t &= (1 - \eta\lambda)\, W_{t-1} - \eta\, \gamma_t \hat O_t

    so every step has RMS :math:`0.2\,\eta` (AdamW's typical update RMS), whatever the gradient's
    scale. :math:`M_0 = V_0 = 0`. What each line follows, and the choices where sources differ:

    - Momentum: EMA form with Nesterov, as ``torch.optim.Muon`` and the authors' GPT-2 code;
      Algorithm 1 writes :math:`M_t = \beta M_{t-1} + G_t` without Nesterov. The sign step makes
      the two forms give the same :math:`O_t` (they differ by a positive factor); ``nesterov=False``
      is Algorithm 1's plain momentum.
    - Sign before orthogonalizing ("sign-stabilized orthogonal direction"): Algorithm 1 (v2/v3) and
      the authors' final code. Paper v1 and its code had no sign step; we follow the current paper.
    - Newton–Schulz: :math:`X_0 = S/(\lVert S\rVert_F + 10^{-7})`, then
      :math:`X \leftarrow aX + (bA + cA^2)X` with :math:`A = XX^\top` on the wide orientation,
      :math:`(a, b, c) = (3.4445, -4.7750, 2.0315)`: the authors' and torch's constants. We iterate
      in float32 (in the parameter's dtype if wider), not bfloat16 as they do on GPUs: the robot
      models here are small and often trained on CPUs, and float32 keeps the update testable against
      a float64 reference.
    - Second moment: element-wise EMA of :math:`O_t \odot O_t` (the orthogonalized matrix, not the
      gradient) with the *momentum's* :math:`\beta`, no bias correction: Algorithm 1 and the
      authors' final code (their v1 code used a separate :math:`\beta_2 = 0.999` with bias
      correction; a bias correction is one scalar per step, which :math:`\gamma_t` cancels up to
      :math:`\varepsilon`). At :math:`t = 1` this makes :math:`\hat O_1 \approx
      \operatorname{sign}(O_1)/\sqrt{1-\beta}`: the first step moves every entry by about
      :math:`0.2\eta`.
    - :math:`\varepsilon = 10^{-8}` in :math:`\sqrt{V_t} + \varepsilon` (Algorithm 1, authors'
      default) and added to :math:`\lVert\hat O_t\rVert_F` as the authors' code does (Algorithm 1
      omits it there; it keeps an all-zero gradient from dividing 0 by 0).
    - :math:`\gamma_t`: Algorithm 1's :math:`0.2\sqrt{mn}/\lVert\hat O_t\rVert_F`; the authors' code
      applies it as :math:`\sqrt{\min(m,n)}/\lVert\hat O_t\rVert_F` times Moonlight's
      :math:`0.2\sqrt{\max(m,n)}` learning-rate factor, the same product.
    - Weight decay decoupled and scaled by :math:`\eta`: Algorithm 1's
      :math:`W_{t+1} = W_t - \eta(\gamma_t \hat O_t + \lambda W_t)`.

    Args:
        params: 2-D parameters (weights of linear layers) or parameter groups.
        lr: learning rate :math:`\eta` (default 1e-3; AdamW's learning rate carries over).
        weight_decay: decoupled weight decay :math:`\lambda` (default 0).
        momentum: :math:`\beta` in [0, 1), for both the momentum and the second moment (default 0.95).
        nesterov: Nesterov momentum (default True).
        ns_steps: Newton–Schulz steps :math:`T` (default 5).
        eps: :math:`\varepsilon > 0` (default 1e-8). It must be positive: a dead unit gives a zero row
            of :math:`O_t`, whose second moment is then exactly 0.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        eps: float = 1e-8,
    ):
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr} (must be >= 0)")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay} (must be >= 0)")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid momentum: {momentum} (must be in [0, 1))")
        if not isinstance(nesterov, bool):
            raise ValueError(f"Invalid nesterov: {nesterov!r} (must be True or False)")
        if not (isinstance(ns_steps, int) and 1 <= ns_steps < 100):
            raise ValueError(f"Invalid ns_steps: {ns_steps!r} (must be an integer in [1, 100); 5 is usual)")
        if not eps > 0.0:
            raise ValueError(f"Invalid eps: {eps} (must be > 0: a dead unit's row has a zero second moment)")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_steps=ns_steps, eps=eps)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(
                        f"AdaMuon takes 2-D matrices only, got a parameter of shape {tuple(p.shape)}; "
                        "AdaMuonWithAdamW(model) sends the other parameters to AdamW")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, momentum_buffers, second_moments = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdaMuon does not support sparse gradients")
                state = self.state[p]
                if not state:
                    # M_t, the (EMA) momentum of the gradients.
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    # V_t, the element-wise EMA of O_t ⊙ O_t (the orthogonalized direction, squared).
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                momentum_buffers.append(state["momentum_buffer"])
                second_moments.append(state["exp_avg_sq"])
            adamuon(
                params,
                grads,
                momentum_buffers,
                second_moments,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                nesterov=group["nesterov"],
                ns_steps=group["ns_steps"],
                eps=group["eps"],
            )
        return loss


def adamuon(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    nesterov: bool,
    ns_steps: int,
    eps: float,
) -> None:
    r"""Functional AdaMuon update, in place on ``params``, ``momentum_buffers`` (:math:`M`) and
    ``exp_avg_sqs`` (:math:`V`); no host synchronization (:math:`\gamma_t` stays a device tensor).

    .. math::
        M &\leftarrow \beta M + (1-\beta) G, \quad U = (1-\beta) G + \beta M \text{ (nesterov) or } M \\
        O &= \mathrm{NS}_T(\operatorname{sign} U), \quad V \leftarrow \beta V + (1-\beta)\, O \odot O,
            \quad \hat O = O \oslash (\sqrt V + \varepsilon) \\
        W &\leftarrow (1 - \eta\lambda) W - \eta \cdot 0.2\sqrt{mn}\, \hat O / (\lVert\hat O\rVert_F + \varepsilon)
    """
    for param, grad, buf, exp_avg_sq in zip(params, grads, momentum_buffers, exp_avg_sqs):
        buf.lerp_(grad, 1.0 - momentum)
        direction = grad.lerp(buf, momentum) if nesterov else buf
        orthogonal = newton_schulz(torch.sign(direction), ns_steps).to(param.dtype)
        exp_avg_sq.mul_(momentum).addcmul_(orthogonal, orthogonal, value=1.0 - momentum)
        normalized = orthogonal.div_(exp_avg_sq.sqrt().add_(eps))
        scale = MATCHED_ADAMW_RMS * math.sqrt(param.numel()) / (torch.linalg.vector_norm(normalized) + eps)
        if weight_decay != 0.0:
            param.mul_(1.0 - lr * weight_decay)
        param.add_(normalized.mul_(scale), alpha=-lr)


def newton_schulz(matrix: Tensor, steps: int) -> Tensor:
    r"""Quintic Newton–Schulz: :math:`X_0 = S / (\lVert S\rVert_F + 10^{-7})`, then ``steps`` times
    :math:`X \leftarrow aX + (bA + cA^2)X`, :math:`A = XX^\top` (on the wide orientation, so
    :math:`A` is the smaller Gram matrix). On the singular values this applies
    :math:`p(s) = as + bs^3 + cs^5` ``steps`` times, leaving the singular vectors; the result is
    close to the orthogonal polar factor :math:`UV^\top` (singular values in about [0.7, 1.2]).
    Runs in float32, or in the input's dtype if that is wider.
    """
    a, b, c = NS_COEFFICIENTS
    x = matrix.to(torch.promote_types(matrix.dtype, torch.float32))
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (torch.linalg.matrix_norm(x) + NS_EPS)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class AdaMuonWithAdamW(MatrixWithAdamW):
    r"""AdaMuon on linear-layer weights, AdamW (same lr, weight decay and eps) on everything else.

    The pairing of :class:`MuonWithAdamW`, with :class:`AdaMuon` in place of ``torch.optim.Muon``:
    biases, norms, embeddings and positional encodings go to an unmodified ``torch.optim.AdamW``,
    as in the authors' code. AdaMuon's step has RMS :math:`0.2\eta`, AdamW's scale, so one learning
    rate serves both halves (and the learning rate tuned for AdamW carries over).

    Args:
        model: the module whose parameters are optimized.
        lr, weight_decay: shared by both halves.
        momentum, nesterov, ns_steps: AdaMuon's (see :class:`AdaMuon`).
        betas: AdamW's, for the non-matrix parameters.
        eps: the floor of both halves' second-moment normalization (AdaMuon's :math:`\varepsilon`
            and AdamW's; the same role and the same default, 1e-8).
    """

    matrix_name = "adamuon"

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        super().__init__(model, lr, weight_decay, betas, eps, momentum=momentum, nesterov=nesterov,
                         ns_steps=ns_steps, eps=eps)

    def _build_matrix(self, matrices: list[nn.Parameter], **kwargs) -> Optimizer:
        return AdaMuon(matrices, **kwargs)
