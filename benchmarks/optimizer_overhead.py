"""Time per training step (forward + backward + optimizer step) of X and DoPr-X.

Prints, for an MLP (obs 17, 3 hidden layers of 256, batch 256) and a small transformer, the
milliseconds per step of each base optimizer, of DoPr on it (exact: statistics and Cholesky solve
every step; amortized: statistics and factorization every k steps, a cached inverse applied as one
matmul per step), their ratio, the ratio DoPr's kernels alone would give at their measured speed
("bound": a measured ratio near it means what remains is the kernels, not the code around them),
and the arithmetic floor of that ratio computed from the layer shapes (see docs: a measured ratio
below the floor means the measurement is wrong). It also prints each kernel's time for one
257-wide layer, the fixed cost of a step (time and torch operations per step on a model so small
that its kernels cost next to nothing), and where amortized DoPr's time goes: its steps between
refreshes and its refresh step, each timed on its own.

    python benchmarks/optimizer_overhead.py [--threads 2] [--repeats 5] [--refresh-every 10] [--device cuda]

``--device`` puts the models, the data and the optimizer state on that device (``auto``: CUDA when
available); on CUDA every timing waits for the device (``torch.cuda.synchronize()``) before the clock
is read, so queued kernels are counted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import nn

from dopr_robot.devices import resolve_device
from dopr_robot.optim import make_optimizer
from dopr_robot.optimizer_demo import SelfAttentionBlock


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(17, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 6))


def transformer() -> nn.Module:
    # 8 tokens of 17-dim observations, d_model 64, 2 blocks, 4 heads (~100k parameters).
    return nn.Sequential(nn.Linear(17, 64), SelfAttentionBlock(64, 4, 8), SelfAttentionBlock(64, 4, 8), nn.Linear(64, 6))


def tiny() -> nn.Module:
    # Kernels that cost next to nothing: its step time is the fixed cost of dispatch and bookkeeping.
    return nn.Sequential(nn.Linear(17, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 6))


MODELS = {"mlp": (mlp, (256, 17), (256, 6)), "transformer": (transformer, (64, 8, 17), (64, 8, 6)), "tiny": (tiny, (8, 17), (8, 6))}


def linear_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[int, int, int, bool]]:
    """(rows n, d_in, d_out, has_bias) for each nn.Linear, rows counted from one forward."""
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(
        (i[0].numel() // m.in_features, m.in_features, m.out_features, m.bias is not None)))
        for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(torch.zeros(input_shape))
    for hook in hooks:
        hook.remove()
    return shapes


def floor_ratios(shapes: list[tuple[int, int, int, bool]], refresh_every: int) -> tuple[float, float]:
    """Multiply-add floor of DoPr's step relative to the plain step (linear layers only)."""
    plain = sum(3 * n * d_in * d_out for n, d_in, d_out, _ in shapes)  # forward + 2 backward matmuls
    statistics_cost = sum(n * (d_in + b) ** 2 / 2 for n, d_in, _, b in shapes)  # symmetric rank-k update
    cholesky = sum((d_in + b) ** 3 / 3 for _, d_in, _, b in shapes)
    solve = sum(d_out * (d_in + b) ** 2 for _, d_in, d_out, b in shapes)
    inverse = sum(2 * (d_in + b) ** 3 / 3 for _, d_in, _, b in shapes)  # L⁻¹ then L⁻ᵀL⁻¹
    exact = (plain + statistics_cost + cholesky + solve) / plain
    amortized = (plain + solve + (statistics_cost + cholesky + inverse) / refresh_every) / plain
    return exact, amortized


def make_train_step(model_name: str, optimizer_name: str, device: torch.device = torch.device("cpu"),
                    **kwargs) -> Callable[[], None]:
    """A closure running one training step on fixed data on ``device`` (the same model init for every optimizer)."""
    build, input_shape, target_shape = MODELS[model_name]
    torch.manual_seed(0)
    model = build().to(device)
    optimizer = make_optimizer(optimizer_name, model, lr=1e-4, **kwargs)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(input_shape, generator=generator).to(device)
    targets = torch.randn(target_shape, generator=generator).to(device)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(inputs), targets).backward()
        optimizer.step()

    return train_step


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for the work queued on ``device`` (nothing to wait for on the CPU)."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def interleaved_ms_per_step(train_steps: list[Callable[[], None]], repeats: int, steps: int,
                            sync: Callable[[], None] = lambda: None) -> tuple[list[float], list[float]]:
    """Median ms per step of each closure, and the median over repeats of each closure's time divided by
    the first closure's time in the same repeat. Repeats alternate between the closures, so the ratios
    compare runs seconds apart: on a shared machine whose speed drifts by tens of percent over a
    minute, that keeps the ratios steady where the absolute times are not. ``sync`` waits for the
    device before each clock reading."""
    for train_step in train_steps:
        for _ in range(10):
            train_step()
    samples: list[list[float]] = [[] for _ in train_steps]
    for _ in range(repeats):
        for train_step, sample in zip(train_steps, samples):
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                train_step()
            sync()
            sample.append((time.perf_counter() - start) / steps * 1e3)
    ratios = [statistics.median(t / base for t, base in zip(sample, samples[0])) for sample in samples]
    return [statistics.median(sample) for sample in samples], ratios


def refresh_cycle_ms(plain_step: Callable[[], None], amortized_step: Callable[[], None], refresh_every: int,
                     repeats: int, sync: Callable[[], None] = lambda: None) -> tuple[float, float, float]:
    """Where amortized DoPr's time goes: the median ms of one step of the base, of DoPr's steps between
    refreshes, and of its refresh step, each step timed on its own over whole refresh cycles that
    alternate with the base's. ``amortized_step`` must not have stepped yet (its first step refreshes)."""
    def timed(step: Callable[[], None]) -> float:
        sync()
        start = time.perf_counter()
        step()
        sync()
        return (time.perf_counter() - start) * 1e3

    for _ in range(2 * refresh_every):  # warm up by whole cycles: the next step refreshes again
        plain_step()
        amortized_step()
    plain, between, refresh = [], [], []
    for _ in range(repeats):
        plain += [timed(plain_step) for _ in range(refresh_every)]
        cycle = [timed(amortized_step) for _ in range(refresh_every)]
        refresh.append(cycle[0])
        between += cycle[1:]
    return statistics.median(plain), statistics.median(between), statistics.median(refresh)


KERNELS = {  # name in layer_kernel_ms -> how the per-kernel table prints it
    "matmul": "one matmul of the plain step (rows x d_in x d_out)",
    "statistics": "statistics: sum of z z^T (one addmm)",
    "cholesky": "damped Cholesky with device-side checks",
    "solves": "apply by two triangular solves",
    "inverse": "inverse from the factor, as DoPr forms it:",
    "potri": "  by cholesky_inverse (potri; 1 CPU thread)",
    "potrs": "  by cholesky_solve of I (potrs; more threads)",
    "triangular": "  by a triangular inverse and one matmul (GPUs)",
    "apply inverse": "apply the inverse (one matmul)",
}


def layer_kernel_ms(rows: int, d_in: int, d_out: int, repeats: int = 200,
                    device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """Milliseconds of each kernel of DoPr's step for one (rows x d_in -> d_out) linear layer with a bias
    (keys of KERNELS), beside the plain step's matmul of the same size (the unit the floor is counted in)."""
    from dopr_robot.optim.activation import InputSums, damped_factor, inverse_from_factor, solve_right

    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(rows, d_in, generator=generator).to(device)
    weight = torch.randn(d_in, d_out, generator=generator).to(device)
    grad = torch.randn(d_out, d_in + 1, generator=generator).to(device)
    sums = InputSums(d_in, homogeneous=True, device=device)
    sums.add_(inputs)
    sigma = sums.second_moment()[0]
    scale = torch.ones((), device=device)
    sync = synchronizer(device)
    cholesky, _, _ = damped_factor(sigma.clone(), 0.01, scale)
    inverse = inverse_from_factor(cholesky)
    identity = torch.eye(d_in + 1, device=device)

    def ms(function: Callable[[], object]) -> float:
        for _ in range(10):
            function()
        samples = []
        for _ in range(5):
            sync()
            start = time.perf_counter()
            for _ in range(repeats):
                function()
            sync()
            samples.append((time.perf_counter() - start) / repeats * 1e3)
        return statistics.median(samples)

    return {
        "matmul": ms(lambda: inputs @ weight),
        "statistics": ms(lambda: (sums.zero_(), sums.add_(inputs))),
        "cholesky": ms(lambda: damped_factor(sigma.clone(), 0.01, scale)),
        "solves": ms(lambda: solve_right(grad, cholesky)),
        "inverse": ms(lambda: inverse_from_factor(cholesky)),
        "potri": ms(lambda: torch.cholesky_inverse(cholesky)),
        "potrs": ms(lambda: torch.cholesky_solve(identity, cholesky)),
        "triangular": ms(lambda: inverse_from_factor(cholesky, "triangular")),
        "apply inverse": ms(lambda: grad @ inverse),
    }


def model_kernel_ms(shapes: list[tuple[int, int, int, bool]], device: torch.device) -> list[dict[str, float]]:
    """``layer_kernel_ms`` of each linear layer of a model (layers of one shape measured once)."""
    measured: dict[tuple[int, int, int], dict[str, float]] = {}
    for rows, d_in, d_out, _ in shapes:
        if (rows, d_in, d_out) not in measured:
            measured[rows, d_in, d_out] = layer_kernel_ms(rows, d_in, d_out, repeats=50, device=device)
    return [measured[rows, d_in, d_out] for rows, d_in, d_out, _ in shapes]


def kernel_bound_ratios(layers: list[dict[str, float]], plain_ms: float, refresh_every: int) -> tuple[float, float]:
    """The ratios DoPr's step would have if it cost only its kernels (``model_kernel_ms``) at their
    measured speed, with no bookkeeping: exact = plain + per layer statistics, Cholesky and solves;
    amortized = plain + per layer the inverse applied, and statistics, Cholesky and inverse every
    ``refresh_every`` steps. Where the measured ratio sits near this bound, what remains is the
    kernels' own speed."""
    exact = sum(k["statistics"] + k["cholesky"] + k["solves"] for k in layers)
    amortized = sum(k["apply inverse"] + (k["statistics"] + k["cholesky"] + k["inverse"]) / refresh_every for k in layers)
    return (plain_ms + exact) / plain_ms, (plain_ms + amortized) / plain_ms


def torch_ops_per_step(train_step: Callable[[], None], steps: int = 20) -> float:
    """How many torch (aten) operations one call of ``train_step`` runs, nested ones included (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            train_step()
    return sum(event.count for event in prof.key_averages() if event.key.startswith("aten::")) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    parser.add_argument("--refresh-every", type=int, default=10, help="k for the amortized variant")
    parser.add_argument("--models", default="mlp,transformer", help="of: mlp, transformer, tiny")
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N (default: cpu)")
    parser.add_argument("--bases", default="adamw,muon,adamuon,signum")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    k = args.refresh_every
    steps = -(-args.steps // k) * k  # whole amortization periods, so refreshes are counted fairly
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}; amortized = refresh_every={k}, cov_ema=0.9")
    print(f"\nper-kernel, one layer 256 -> 256 with bias, batch 256 ({where}):")
    for name, value in layer_kernel_ms(256, 256, 256, device=device).items():
        print(f"  {KERNELS[name]:<52}{value:7.3f} ms")
    print(f"\nfixed per-step cost: the 'tiny' model (17 -> 16x3 -> 6, batch 8), whose kernels cost next to nothing ({where}):")
    for base in args.bases.split(","):
        variants = {base: {}, f"dopr-{base} exact": {"apply": "solve"}, f"dopr-{base} amortized": {"refresh_every": k, "cov_ema": 0.9}}
        train_steps = [make_train_step("tiny", base if not options else f"dopr-{base}", device, **options) for options in variants.values()]
        times, _ = interleaved_ms_per_step(train_steps, args.repeats, steps * 5, synchronizer(device))
        print("  " + "; ".join(f"{name} {ms:.3f} ms, {torch_ops_per_step(step):.0f} torch ops"
                               for name, ms, step in zip(variants, times, train_steps)))
    print()
    print(f"{'model':<12}{'base':<8}{'X ms':>8}{'DoPr ms':>9}{'ratio':>7}{'inverse':>9}{'bound':>7}{'floor':>7}"
          f"{'amort. ms':>11}{'ratio':>7}{'bound':>7}{'floor':>7}")
    print("(DoPr ms, ratio: exact with two triangular solves; inverse: exact ratio applying the inverse as a matmul;\n"
          " bound: the ratio DoPr's kernels alone give at their measured speed; floor: the ratio of multiply-adds)")
    for model_name in args.models.split(","):
        build, input_shape, _ = MODELS[model_name]
        shapes = linear_shapes(build(), input_shape)
        floor_exact, floor_amortized = floor_ratios(shapes, k)
        kernels = model_kernel_ms(shapes, device)
        for base in args.bases.split(","):
            (plain, exact, _, amortized), (_, exact_ratio, inverse_ratio, amortized_ratio) = interleaved_ms_per_step(
                [make_train_step(model_name, base, device),
                 make_train_step(model_name, f"dopr-{base}", device, apply="solve"),
                 make_train_step(model_name, f"dopr-{base}", device, apply="inverse"),
                 make_train_step(model_name, f"dopr-{base}", device, refresh_every=k, cov_ema=0.9)],
                args.repeats, steps, synchronizer(device),
            )
            bound_exact, bound_amortized = kernel_bound_ratios(kernels, plain, k)
            print(f"{model_name:<12}{base:<8}{plain:>8.3f}{exact:>9.3f}{exact_ratio:>7.2f}{inverse_ratio:>9.2f}"
                  f"{bound_exact:>7.2f}{floor_exact:>7.2f}{amortized:>11.3f}{amortized_ratio:>7.2f}"
                  f"{bound_amortized:>7.2f}{floor_amortized:>7.2f}", flush=True)
    print(f"\namortized, step by step over refresh cycles of {k} ({where}): each step timed on its own")
    for model_name in args.models.split(","):
        for base in args.bases.split(","):
            plain, between, refresh = refresh_cycle_ms(
                make_train_step(model_name, base, device),
                make_train_step(model_name, f"dopr-{base}", device, refresh_every=k, cov_ema=0.9),
                k, args.repeats, synchronizer(device))
            print(f"  {model_name}/{base}: X {plain:.3f} ms; DoPr between refreshes {between:.3f} ms "
                  f"({between / plain:.2f}x), the refresh step {refresh:.3f} ms (+{refresh - plain:.2f} ms)", flush=True)


if __name__ == "__main__":
    main()
