"""Prediction cost of the flow head: ms per batched ``predict`` call, flow-mlp at 1/5/10 Euler steps
against the mlp regressor (1 CPU thread by default).

    python benchmarks/flow_predict_speed.py [--batches 1,64] [--steps 1,5,10] [--threads 1] [--repeats 7]

Default sizes (mlp: residual MLP 256 wide, 3 blocks; flow-mlp: the same trunk, a velocity network 256
wide with 2 FiLM blocks), Reach-v0's dimensions (18-d observations, 3-d actions), history 1, chunk 4.
Random weights: the cost does not depend on them. Each cell is the median over ``--repeats`` of the
mean over calls filling ~0.05 s, under ``torch.inference_mode`` as evaluation runs. "per-row gen."
passes one generator per row, as evaluation's controller does (one per episode).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from policies import make_policy

OBS_DIM, ACT_DIM, HISTORY, CHUNK = 18, 3, 1, 4


def ms_per_call(call, repeats: int, seconds_per_repeat: float = 0.05) -> float:
    """Median over ``repeats`` of the mean ms per ``call()``, each repeat as many calls as fill
    ``seconds_per_repeat`` (counted once, after a warm-up call)."""
    call()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds_per_repeat:
        call()
        calls += 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        times.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--steps", default="1,5,10", help="Euler steps of the flow head")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    torch.manual_seed(0)
    mlp = make_policy("mlp", OBS_DIM, ACT_DIM, HISTORY, CHUNK).eval()
    flow = make_policy("flow-mlp", OBS_DIM, ACT_DIM, HISTORY, CHUNK).eval()
    obs = {b: torch.randn(b, HISTORY, OBS_DIM) for b in batches}

    rows = []
    with torch.inference_mode():
        rows.append(("mlp", "-", {b: ms_per_call(lambda b=b: mlp.predict(obs[b]), repeats=args.repeats)
                                  for b in batches}))
        for steps in (int(s) for s in args.steps.split(",")):
            flow.flow_steps = steps
            generator = torch.Generator().manual_seed(0)
            rows.append(("flow-mlp", str(steps), {b: ms_per_call(lambda b=b: flow.predict(obs[b], generator=generator),
                                                                 repeats=args.repeats) for b in batches}))
            per_row = {b: [torch.Generator().manual_seed(i) for i in range(b)] for b in batches}
            rows.append(("flow-mlp, per-row gen.", str(steps),
                         {b: ms_per_call(lambda b=b: flow.predict(obs[b], generator=per_row[b]), repeats=args.repeats)
                          for b in batches}))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s); obs {OBS_DIM}, act {ACT_DIM}, "
          f"history {HISTORY}, chunk {CHUNK}; ms per predict call (median of {args.repeats})")
    header = "| policy | Euler steps | " + " | ".join(f"batch {b} ms | x mlp" for b in batches) + " |"
    print(header)
    print("|" + "---|" * (2 + 2 * len(batches)))
    base = rows[0][2]
    for name, steps, cells in rows:
        cells_text = " | ".join(f"{cells[b]:.3f} | {cells[b] / base[b]:.1f}" for b in batches)
        print(f"| {name} | {steps} | {cells_text} |")


if __name__ == "__main__":
    main()
