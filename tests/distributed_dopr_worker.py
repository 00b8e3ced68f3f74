"""One rank of the 2-process DoPr test: DDP on gloo, each rank sees half of every batch.

Run by path by tests/test_optim_distributed.py (with the project installed; RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT set), which also reads make_model and batches from it with runpy.
Usage: distributed_dopr_worker.py OPTIMIZER[,OPTIMIZER...] STEPS OUT_FILE
Each optimizer trains its own model in turn in one process group (starting the processes, not the
steps, is what the test pays for); its weights go to OUT_FILE.OPTIMIZER.rankR.
"""

import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dopr_robot.optim import make_optimizer


def batches(steps: int, batch_size: int = 32):
    """The same global batches in every process; scales differ per half so that per-rank
    statistics would be visibly wrong."""
    generator = torch.Generator().manual_seed(123)
    for _ in range(steps):
        inputs = torch.randn(batch_size, 5, generator=generator)
        inputs[batch_size // 2:] = inputs[batch_size // 2:] * 5.0 + 2.0
        yield inputs, torch.randn(batch_size, 3, generator=generator)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def train_one(optimizer_name: str, steps: int, out_file: str) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    model = DistributedDataParallel(make_model())
    optimizer = make_optimizer(optimizer_name, model, lr=1e-2, damping=0.01)
    for inputs, targets in batches(steps):
        shard = slice(rank * len(inputs) // world, (rank + 1) * len(inputs) // world)
        optimizer.zero_grad()
        (model(inputs[shard]) - targets[shard]).pow(2).mean().backward()
        optimizer.step()
    torch.save({k: v.detach().clone() for k, v in model.module.state_dict().items()},
               f"{out_file}.{optimizer_name}.rank{rank}")


def main() -> None:
    optimizer_names, steps, out_file = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo")
    for optimizer_name in optimizer_names:
        train_one(optimizer_name, steps, out_file)
    # Both ranks reach teardown together: a rank that tears gloo down while its peer is still
    # connected can abort ("terminate called without an active exception"), seen once in CI.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
