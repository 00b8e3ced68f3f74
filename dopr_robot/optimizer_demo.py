"""Why activation preconditioning matters, in one minute: regression on ill-conditioned inputs.

The inputs of a linear layer are drawn with a covariance whose eigenvalues span ``condition``
(rotated away from the coordinate axes, and with a non-zero mean), and the layer must recover a
teacher map. A gradient preconditioner alone (Adam, Muon, Signum) sees gradients whose scale
differs by the condition number along directions it cannot see; AP divides the input covariance
out, so the layer learns as if its inputs were isotropic.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from dopr_robot.errors import UserError
from dopr_robot.optim import OPTIMIZERS, base_of, is_dopr, make_optimizer, optimizer_arguments


@dataclass(frozen=True)
class RegressionProblem:
    inputs: torch.Tensor  # (N, d_in)
    targets: torch.Tensor  # (N, d_out)


def make_anisotropic_regression(
    seed: int = 0, d_in: int = 32, d_out: int = 8, condition: float = 1000.0, n: int = 4096
) -> RegressionProblem:
    """Inputs z = mean + R diag(sqrt(eigs)) eps, eigenvalues log-spaced from 1 down to 1/condition."""
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=generator))
    eigenvalues = torch.logspace(0.0, -math.log10(condition), d_in)
    mean = torch.randn(d_in, generator=generator)
    inputs = mean + (torch.randn(n, d_in, generator=generator) * eigenvalues.sqrt()) @ rotation.T
    teacher = torch.randn(d_out, d_in, generator=generator) / math.sqrt(d_in)
    targets = inputs @ teacher.T + torch.randn(d_out, generator=generator)
    return RegressionProblem(inputs, targets)


def relative_loss(model: nn.Module, problem: RegressionProblem) -> float:
    """Mean squared error divided by the targets' variance (1.0 = predicting the mean)."""
    with torch.no_grad():
        error = (model(problem.inputs) - problem.targets).pow(2).mean()
        return float(error / problem.targets.var(dim=0).mean())


def steps_to_target(
    optimizer_name: str,
    problem: RegressionProblem,
    *,
    lr: float,
    target: float,
    max_steps: int,
    batch_size: int = 256,
    seed: int = 0,
    **optimizer_kwargs,
) -> tuple[int | None, float]:
    """Train a fresh ``nn.Linear`` with the named optimizer; return (first step at which the
    full-data relative loss is ≤ ``target`` or None, final relative loss)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = nn.Linear(problem.inputs.shape[1], problem.targets.shape[1])
    optimizer = make_optimizer(optimizer_name, model, lr=lr, **optimizer_kwargs)
    for step in range(1, max_steps + 1):
        batch = torch.randint(0, problem.inputs.shape[0], (batch_size,), generator=generator)
        loss = (model(problem.inputs[batch]) - problem.targets[batch]).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 10 == 0 and relative_loss(model, problem) <= target:
            return step, relative_loss(model, problem)
    return None, relative_loss(model, problem)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--optimizers", default="adamw,dopr-adamw,signum,dopr-signum,muon,dopr-muon",
                        help="comma-separated registry names")
    parser.add_argument("--condition", type=float, default=1000.0, help="input covariance condition number")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--damping", type=float, default=0.01, help="DoPr relative damping")
    parser.add_argument("--target", type=float, default=1e-3, help="relative loss to reach")
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)


def run_demo(args: argparse.Namespace) -> int:
    names = _check_demo_arguments(args)
    problem = make_anisotropic_regression(seed=args.seed, condition=args.condition)
    print(f"Linear regression, d_in=32, inputs with condition number {args.condition:g} (rotated, "
          f"non-zero mean); lr={args.lr:g} for every optimizer, damping={args.damping:g} for DoPr.")
    print(f"{'optimizer':<12} {'steps to loss<=' + format(args.target, 'g'):>20} {'final rel. loss':>16} {'time':>7}")
    for name in names:
        start = time.perf_counter()
        steps, final = steps_to_target(name, problem, lr=args.lr, target=args.target, max_steps=args.max_steps,
                                       seed=args.seed, **optimizer_arguments(name, {"damping": args.damping}))
        shown = str(steps) if steps is not None else f"> {args.max_steps}"
        print(f"{name:<12} {shown:>20} {final:>16.2e} {time.perf_counter() - start:>6.1f}s")
    return 0


def _check_demo_arguments(args: argparse.Namespace) -> list[str]:
    """The optimizer names, once every value is known to work: nothing is printed before a bad one."""
    names = [name.strip() for name in args.optimizers.split(",") if name.strip()]
    if not names:
        raise UserError(f"--optimizers names no optimizer, got {args.optimizers!r}; valid: {', '.join(OPTIMIZERS)}")
    unknown = [name for name in names if name not in OPTIMIZERS]
    if unknown:
        raise UserError(f"unknown optimizer(s) {', '.join(unknown)}; valid: {', '.join(OPTIMIZERS)}")
    if not (math.isfinite(args.condition) and args.condition >= 1):
        raise UserError(f"--condition must be a finite number >= 1, got {args.condition}")
    for flag, value in (("--lr", args.lr), ("--target", args.target)):
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"{flag} must be a finite number > 0, got {value}")
    if args.max_steps < 10:
        raise UserError(f"--max-steps must be >= 10, got {args.max_steps}")
    for name in names:  # the optimizers check their own hyperparameters (damping), on a throwaway layer
        try:
            make_optimizer(name, nn.Linear(2, 2), lr=args.lr, **optimizer_arguments(name, {"damping": args.damping}))
        except ValueError as err:
            raise UserError(f"--damping: {err}" if "damping" in str(err) else f"--optimizers {name}: {err}") from None
    return names


class SelfAttentionBlock(nn.Module):
    """A pre-norm transformer block whose every matmul is an ``nn.Linear`` (fused q, k, v).

    q, k and v share one input and so, fused, one activation covariance: what AP wants.
    Shapes: (B, T, D) -> (B, T, D).
    """

    def __init__(self, d_model: int = 32, n_heads: int = 4, n_tokens: int = 8):
        super().__init__()
        self.n_heads = n_heads
        self.position = nn.Parameter(torch.zeros(n_tokens, d_model))
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        x = x + self.position[:tokens]
        q, k, v = self.qkv(self.norm1(x)).view(batch, tokens, 3, self.n_heads, -1).unbind(dim=2)
        attended = nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.out(attended.transpose(1, 2).reshape(batch, tokens, width))
        return x + self.mlp(self.norm2(x))


# Small models for `dopr-robot optimizers --model NAME`, to show which parameters DoPr covers.
DEMO_MODELS = {
    "mlp": lambda: nn.Sequential(nn.Linear(17, 64), nn.ReLU(), nn.LayerNorm(64), nn.Linear(64, 6)),
    "attention": lambda: nn.Sequential(nn.Linear(17, 32), SelfAttentionBlock(32), nn.Linear(32, 6)),
}


def coverage_table(model_name: str, base: str) -> str:
    """DoPr's coverage table for one of ``DEMO_MODELS``."""
    if model_name not in DEMO_MODELS:
        raise UserError(f"unknown model {model_name!r}; valid: {', '.join(DEMO_MODELS)}")
    if f"dopr-{base}" not in OPTIMIZERS:
        raise UserError(f"unknown base {base!r}; valid: {', '.join(base_of(n) for n in OPTIMIZERS if is_dopr(n))}")
    optimizer = make_optimizer(f"dopr-{base}", DEMO_MODELS[model_name]())
    return f"dopr-{base} on the demo {model_name!r} model:\n{optimizer.format_coverage()}"
