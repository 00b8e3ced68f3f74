"""Behavior cloning: ``train(config) -> RunResult``. The loop is in ``train``, on one screen.

    batch -> L2 loss (normalized actions) -> backward -> clip -> optimizer step -> LR schedule
          -> EMA -> every N steps: log / validation loss / evaluator / checkpoint

Under ``torchrun`` (WORLD_SIZE > 1) each rank takes its slice of the same global batch, DDP averages
the gradients, DoPr all-reduces its statistics, and rank 0 alone writes files.

Everything a step touches lives on the run's device (``train(..., device=)``): the policy with its
normalizers, the EMA copy, the optimizer state (DoPr's statistics, factors and counters included)
and the training and validation windows; the seeded batch sampler stays on the CPU (the batch order
is the same on every device) and only its indices travel, without a host wait. Under torchrun with
CUDA each rank takes ``cuda:LOCAL_RANK`` and NCCL, on the CPU gloo.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

import demos
from demos.minari_source import minari_data_dir
from dopr_robot import threads
from dopr_robot.atomic import check_directory_destination, write_json_atomic, write_text_atomic
from dopr_robot.checkpoint import CHECKPOINT_NAME, FORMAT, load_checkpoint, save_atomic
from dopr_robot.config import TrainConfig, same_file
from dopr_robot.devices import copy_to, resolve_device
from dopr_robot.errors import UserError
from dopr_robot.optim import make_optimizer
from dopr_robot.optim.graph_step import step_in_graph
from dopr_robot.run_dir import changed_settings, read_saved, refuse_changes
from dopr_robot.run_log import METRICS_NAME, MetricsLog, read_metrics, truncate_metrics
from policies import Policy, make_policy

# What a run writes into its directory (and --overwrite removes).
COVERAGE_FILE = "dopr_coverage.txt"  # DoPr's coverage table: which parameters get AP
EVAL_SETTINGS_FILE = "eval_settings.json"  # what the evaluations during training (and so the best checkpoint) used
RUN_FILES = ("config.json", CHECKPOINT_NAME, METRICS_NAME, "tensorboard", "eval.json", COVERAGE_FILE,
             EVAL_SETTINGS_FILE)

# evaluator(policy in eval mode, step) -> metrics to log, e.g. closed-loop success (passed in by the
# caller: training never imports evaluation).
Evaluator = Callable[[Policy, int], dict[str, float]]


@dataclass
class RunResult:
    run_dir: Path
    step: int
    final_train_loss: float
    final_val_loss: float | None
    policy: Policy  # the EMA policy (or the raw one with the EMA off), eval mode
    steps_run: int = 0  # by this call (0: a resumed run that had already finished)
    best_eval: dict[str, Any] | None = None  # {"eval_success_rate", "step"}: the best closed-loop success
    # The training wall time of earlier calls that the resumed checkpoint carried (0 for a fresh run): a
    # caller timing this call adds it to report the whole run's time.
    resumed_elapsed_s: float = 0.0


def train(config: TrainConfig, evaluator: Evaluator | None = None, resume: bool = False, overwrite: bool = False,
          evaluate_every: int = 0, progress: bool = True, device: str | torch.device = "auto",
          warm_start: str | Path | None = None, eval_settings: dict[str, Any] | None = None) -> RunResult:
    """Train a BC policy as configured; write config.json, metrics.jsonl and checkpoint.pt to ``config.out``.

    ``device`` (``auto``: CUDA when available) is where the run executes; not part of the config, so
    a run resumes on another device (bit-exact on the same one). The returned policy is on it.
    ``evaluator`` runs every ``config.eval_every`` steps (``evaluate_every`` sets the cadence of a
    config without one). ``warm_start``: a run directory to continue training from (:func:`_warm_start`).
    ``eval_settings``: what ``evaluator`` measures with (episodes, seeds, ...; plain JSON values), saved
    as eval_settings.json beside config.json; a resume must give the ones saved.
    """
    evaluate_every = _evaluation_cadence(config, evaluator, evaluate_every)
    run = _setup(config, resume, overwrite, device, warm_start, eval_settings)
    policy, optimizer, scheduler, ema, step = run.policy, run.optimizer, run.scheduler, run.ema, run.step
    eval_policy = ema.module if ema is not None else policy
    ap_watch, meter = _APWatch(optimizer, run.run_dir), _LossMeter(run.device)
    log = _open_log(run, ap_watch.enabled, progress)
    last_loss, val_loss = run.last_train_loss, run.last_val_loss
    started = time.perf_counter() - run.resumed_elapsed_s  # a resumed run's clock goes on from its checkpoint's
    bar = tqdm(total=config.steps, initial=step, desc=f"train {config.policy}/{config.optimizer}",
               disable=not progress or run.rank != 0)

    def due(every: int) -> bool:  # every N steps, and at the last step
        return every > 0 and (step % every == 0 or step == config.steps)

    threads.rebalance()  # a job started beside this one while it set up (at the same instant) is seen now
    try:
        while step < config.steps:
            indices = torch.randint(len(run.train_windows), (config.batch_size,), generator=run.sampler)
            loss = run.loss(run.train_windows.batch(copy_to(indices.chunk(run.world)[run.rank], run.device)))
            meter.add(loss, step + 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.update()  # gradient clip, optimizer step, EMA update
            scheduler.step()
            step += 1
            bar.update(1)

            if due(config.log_every):
                threads.rebalance()  # give cores back to (or take them from) other jobs on the machine
                _check_finite(run, meter, step)
                last_loss = meter.mean()
                log.write(step=step, train_loss=last_loss, lr=float(scheduler.get_last_lr()[0]),
                          elapsed_s=round(time.perf_counter() - started, 3), **ap_watch.check(step))
                bar.set_postfix(loss=f"{last_loss:.4f}")
            if run.valid_windows is not None and due(config.val_every):
                val = _validate(run, eval_policy, step)
                val_loss = val["val_loss"]
                log.write(step=step, **val)
            if evaluator is not None and due(evaluate_every):
                log.write(step=step, **_evaluate(run, evaluator, eval_policy, step))
            if due(config.checkpoint_every):
                _check_finite(run, meter, step)  # a checkpoint is only ever written from finite weights
                _save(run, step, elapsed_s=time.perf_counter() - started)
    finally:
        bar.close()
        log.close()
    return RunResult(run.run_dir, step, last_loss, val_loss, eval_policy.eval(), step - run.step, run.best_eval,
                     resumed_elapsed_s=run.resumed_elapsed_s)


@dataclass
class _Run:
    """What one run trains with, built by :func:`_setup` (restored from its checkpoint on a resume)."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    rank: int
    world: int
    dataset: demos.DemoDataset
    train_windows: Any
    valid_windows: Any  # None without validation episodes
    policy: Policy
    ema: WeightEMA | None
    forward: Callable[..., torch.Tensor]  # the network call of the loss (under autocast with amp)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: torch.Generator  # the batch order, on the CPU
    data_sha256: str | None  # the demonstrations' content (data_fingerprint), checked on a resume
    loss: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None  # batch -> loss (:func:`_step_functions`)
    update: Callable[[], None] | None = None  # gradient clip, optimizer step, EMA update (:func:`_step_functions`)
    step: int = 0  # where this call starts
    best: dict[str, Any] | None = None  # {"val_loss", "step"} of the best validation so far
    best_eval: dict[str, Any] | None = None  # {"eval_success_rate", "step"} of the best closed-loop evaluation
    last_train_loss: float = math.nan  # the last logged numbers (a resumed run starts with its own)
    last_val_loss: float | None = None
    resumed_elapsed_s: float = 0.0  # the training wall time of earlier calls (restored from the checkpoint)


def _setup(config: TrainConfig, resume: bool, overwrite: bool, device: str | torch.device,
           warm_start: str | Path | None = None, eval_settings: dict[str, Any] | None = None) -> _Run:
    """Device, ranks, data, run directory, policy (seeded), EMA, optimizer and schedule; restored from
    the checkpoint on a resume. Everything a user can get wrong is refused before the run directory
    is touched."""
    device = _run_device(device)
    rank, world = _init_distributed(device)
    if config.batch_size % world:
        raise UserError(f"--batch-size {config.batch_size} must be divisible by the number of ranks ({world})")
    run_dir = check_directory_destination(config.out, what="run")  # before any work: a file in the way, no permission
    data_sha256 = data_fingerprint(config.data)
    checkpoint = _resume_checkpoint(run_dir, config, data_sha256) if resume else None
    dataset = demos.load(config.data, obs_keys=config.obs_keys or None)
    _check_data_fits(dataset, config)  # before touching RUN_DIR: a refused run leaves nothing behind
    if rank == 0:
        _prepare_run_dir(run_dir, config, resume, overwrite, eval_settings)
    train_windows = dataset.windows("train", history=config.history, chunk=config.chunk).to(device)
    valid_windows = dataset.windows("valid", history=config.history, chunk=config.chunk).to(device) \
        if dataset.valid_indices else None

    torch.manual_seed(config.seed)
    policy = make_policy(config.policy, dataset.obs_dim, dataset.act_dim, config.history, config.chunk,
                         image_shapes=dataset.image_shapes, **config.policy_options)
    stats = dataset.normalization()
    policy.obs_normalizer.set_statistics(stats["obs_mean"], stats["obs_std"])
    policy.action_normalizer.set_statistics(stats["act_mean"], stats["act_std"])
    policy.to(device)  # initialized on the CPU: the same initial weights on every device
    # The EMA copy is made before the optimizer hooks the policy's layers, so it carries no hooks.
    ema = WeightEMA(policy, config.ema_decay) if config.ema_decay > 0 else None
    model = nn.parallel.DistributedDataParallel(policy, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else policy
    optimizer = make_optimizer(config.optimizer, model, **_optimizer_kwargs(config, checkpoint))
    if config.compile:
        _learning_rate_as_tensor(optimizer, device)  # before the schedule reads it
    run = _Run(config, run_dir, device, rank, world, dataset, train_windows, valid_windows, policy, ema,
               forward=mixed_precision(model, device, config.amp), optimizer=optimizer,
               scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(config.warmup_steps, config.steps)),
               sampler=torch.Generator().manual_seed(config.seed), data_sha256=data_sha256)
    if checkpoint is not None:
        _restore(run, checkpoint)
    elif warm_start is not None:
        _warm_start(run, load_checkpoint(warm_start))
    run.loss, run.update = _step_functions(run)
    return run


# DoPr options whose default changed: a run that began before keeps the value its optimizer state was saved with
# (DoPr refuses to load a state saved with another conv form). conv_form: "unfold" until it became "channel".
DEFAULTS_KEPT_ON_RESUME = ("conv_form",)


def _optimizer_kwargs(config: TrainConfig, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
    """The optimizer's arguments; on a resume, options the config leaves to their default take the value
    the checkpoint's optimizer was built with (:data:`DEFAULTS_KEPT_ON_RESUME`)."""
    kwargs = config.optimizer_kwargs()
    groups = checkpoint["optimizer"].get("param_groups") if checkpoint is not None else None
    for key in DEFAULTS_KEPT_ON_RESUME:
        if groups and key in groups[0] and key not in config.optimizer_options:
            kwargs[key] = groups[0][key]
    return kwargs


# ``train --compile`` on CUDA also captures the compiled step as CUDA graphs; benchmarks/compiled_step.py turns
# this off to time the compiled step without the capture.
CAPTURE_ON_CUDA = True


def _step_functions(run: _Run) -> tuple[Callable[[dict[str, torch.Tensor]], torch.Tensor], Callable[[], None]]:
    """The step's two calls: ``loss(batch)`` (the forward; its backward follows it) and ``update()``
    (gradient clip, optimizer step, EMA update); with ``config.compile`` compiled by ``torch.compile``.

    Compiled, ``update()`` is one function of tensors: the clip, the optimizer's undecorated step (for DoPr
    ``DoPr.apply_step``: its solve and the base step) and the EMA's averaging, one graph (with DoPr one per
    value of its recording flag: the refresh step and the plain step). Around it, on the host: DoPr's
    ``begin_step`` (the all-reduce of the statistics, the learning rate handed to the base) and
    ``end_step`` (step counters), and the EMA's update count. A new run's first step, which creates the
    optimizer's state and copies the weights into the EMA, runs eager. With DoPr the forward is compiled
    with its statistics hooks (they read a plain recording flag, so an amortized run has two forward
    graphs, recording and not). On CUDA the compiled pieces are captured as CUDA graphs (inductor's
    ``triton.cudagraphs``, what ``mode="reduce-overhead"`` sets). Compiled random ops call torch's own
    (``fallback_random``): dropout and a flow policy's noise draw what eager draws, and a resumed run
    replays them.
    """
    policy, optimizer, forward, config, ema = run.policy, run.optimizer, run.forward, run.config, run.ema
    _step_counters_on_device(optimizer, config.compile and run.device.type == "cuda")

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return policy.loss(batch, forward=forward)

    def clip() -> None:
        nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)

    def update() -> None:
        if config.grad_clip > 0:
            clip()
        optimizer.step()
        if ema is not None:
            ema.update(policy)

    if not config.compile:
        return loss, update
    torch._dynamo.reset()  # a fresh cache per run: runs in one process never reach its recompile limit
    options = {"fallback_random": True, "triton.cudagraphs": run.device.type == "cuda" and CAPTURE_ON_CUDA}

    def compiled(function: Callable, **more: Any) -> Callable:
        return torch.compile(function, options={**options, **more}, dynamic=False)

    dopr = hasattr(optimizer, "apply_step")

    def clip_step_and_average(refresh: bool) -> None:
        with torch.no_grad():
            if config.grad_clip > 0:
                clip()
            if dopr:
                optimizer.apply_step(refresh)
            else:  # the class's own step: the schedule's wrapper of optimizer.step is not traceable
                step_in_graph(optimizer)
            if ema is not None:
                ema.average(policy)

    # Inductor's on-disk graph cache served a resumed run a refresh graph that asserted another layout of
    # the cached inverse than the run holds (torch 2.13, CPU): DoPr's step is compiled afresh in each run.
    compiled_step = compiled(clip_step_and_average, **({"fx_graph_cache": False} if dopr else {}))

    fresh = run.step == 0  # a new run: its first step creates the optimizer's state and starts the EMA
    ready = False  # once the state and the EMA exist they stay: checked until then, not every step

    def compiled_update() -> None:
        nonlocal fresh, ready
        ready = ready or (not fresh and (not dopr or optimizer.state_complete())
                          and (ema is None or ema.updates > 0))
        if not ready:
            update()  # eager
            fresh = False
            return
        refresh = optimizer.begin_step() if dopr else False
        compiled_step(refresh)
        if dopr:
            optimizer.end_step()
        if ema is not None:
            ema.updates += 1

    return compiled(loss), compiled_update


def _torch_optimizers(optimizer: torch.optim.Optimizer) -> list[torch.optim.Optimizer]:
    """``optimizer`` and the optimizers it holds (DoPr's base, the two parts of Muon or AdaMuon with AdamW)."""
    found = [optimizer]
    for value in vars(optimizer).values():
        if isinstance(value, torch.optim.Optimizer):
            found += _torch_optimizers(value)
    return found


def _step_counters_on_device(optimizer: torch.optim.Optimizer, on_device: bool) -> None:
    """torch.optim's ``capturable``: its step counters on the parameters' device, or (off) on the host.

    A CUDA graph holds no host tensors, so the compiled CUDA step needs them on the device. Dynamo turns it
    on only when it traces the step that creates the state, and here that step runs eager (a resumed run
    has its state already): so it is set here, on every run, and a checkpoint taken to another device or
    mode gets the setting it needs there (an eager CPU step refuses ``capturable``)."""
    for part in _torch_optimizers(optimizer):
        for group in part.param_groups:
            if "capturable" not in group:
                continue
            group["capturable"] = on_device
            for param in group["params"]:
                step = part.state.get(param, {}).get("step")
                if on_device and torch.is_tensor(step) and step.device != param.device:
                    part.state[param]["step"] = step.to(device=param.device, dtype=torch.float32)


def _learning_rate_as_tensor(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Hold the learning rate as a tensor that the schedule updates in place: a Python float would be a
    constant of the compiled optimizer step, recompiled at each new value."""
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), device=device)


def _evaluation_cadence(config: TrainConfig, evaluator: Evaluator | None, evaluate_every: int) -> int:
    """Every how many steps the evaluator runs: ``config.eval_every``, or the argument for a config
    without one (one source: both set and different is refused)."""
    if config.eval_every and evaluate_every and config.eval_every != evaluate_every:
        raise UserError(f"the config says eval_every={config.eval_every} and the call evaluate_every={evaluate_every}; "
                        "give one")
    if config.eval_every and evaluator is None:
        raise UserError(f"--eval-every {config.eval_every} needs an evaluator: `dopr-robot train` builds one from the "
                        "data's task; from Python pass train(config, evaluator=dopr_robot.evaluate.make_evaluator(...))")
    return config.eval_every or evaluate_every


def data_fingerprint(source: str) -> str | None:
    """The sha256 of the demonstrations' content: the file's bytes, or for a Minari dataset (directory
    or local id) every file of its data directory with its name. None when ``source`` names neither
    (loading it then says why). Read in 1 MiB blocks: memory stays flat for any size."""
    path = Path(source)
    if path.is_file():
        files, root = [path], path.parent
    else:
        root = minari_data_dir(source)
        if root is None:
            return None
        files = sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        if len(files) > 1:
            digest.update(f"{file.relative_to(root).as_posix()}\0".encode())
        with open(file, "rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _resume_checkpoint(run_dir: Path, config: TrainConfig, data_sha256: str | None) -> dict[str, Any]:
    """The checkpoint to resume from, refused when the demonstrations are not the ones it trained on."""
    if not (run_dir / CHECKPOINT_NAME).exists():
        raise UserError(f"cannot resume: {run_dir} holds no {CHECKPOINT_NAME}")
    checkpoint = load_checkpoint(run_dir)
    recorded = checkpoint["dataset"].get("sha256")  # absent from checkpoints written before it was recorded
    if recorded is not None and recorded != data_sha256:
        raise UserError(f"cannot resume {run_dir}: {config.data} is not the data the run started with (its content "
                        "changed); put the original back, or start a new run directory on this data")
    return checkpoint


def _restore(run: _Run, checkpoint: dict[str, Any]) -> None:
    """Put the run back where its checkpoint left it: weights, EMA, optimizer, schedule, every RNG and
    the step; the log loses what was written after the checkpoint."""
    run.policy.load_state_dict(checkpoint["model"])
    if run.ema is not None:
        run.ema.module.load_state_dict(checkpoint["ema"])
        run.ema.updates = checkpoint["ema_updates"]
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if run.device.type == "cuda" and checkpoint["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], run.device)  # dropout on the GPU
    run.sampler.set_state(checkpoint["rng"]["sampler"])
    run.step, run.best, run.best_eval = checkpoint["step"], checkpoint["best"], checkpoint.get("best_eval")
    # A checkpoint written before the training time was recorded carries none: its earlier time counts as 0.
    # The time a killed call spent after its last checkpoint is not in it either: that work is redone, and
    # counted, by the resume.
    run.resumed_elapsed_s = float(checkpoint.get("elapsed_s", 0.0))
    if run.rank == 0:
        truncate_metrics(run.run_dir / METRICS_NAME, run.step)
    logged = read_metrics(run.run_dir / METRICS_NAME)  # what a run that already finished reports
    run.last_train_loss = next((r["train_loss"] for r in reversed(logged) if "train_loss" in r), math.nan)
    run.last_val_loss = next((r["val_loss"] for r in reversed(logged) if "val_loss" in r), None)


def _warm_start(run: _Run, checkpoint: dict[str, Any]) -> None:
    """A new run that continues another's training on its own data (DAgger's rounds): the weights, the
    EMA and the optimizer state (moments, DoPr's statistics) are the checkpoint's; the step, the
    learning-rate schedule, the batch order and the RNGs are this run's own. The normalizers are the
    checkpoint's too: new statistics would change what the same weights compute. A resume of this
    run restores its own checkpoint instead."""
    spec = checkpoint["policy"]
    mine = (run.config.policy, run.policy.obs_dim, run.policy.act_dim, run.policy.history, run.policy.chunk)
    theirs = (spec["name"], spec["obs_dim"], spec["act_dim"], spec["history"], spec["chunk"])
    if mine != theirs or spec["config"] != asdict(run.policy.config):
        raise UserError(f"cannot continue from a checkpoint of policy {theirs} {spec['config']}: this run builds "
                        f"{mine} {asdict(run.policy.config)}")
    run.policy.load_state_dict(checkpoint["model"])
    if run.ema is not None and checkpoint.get("ema") is not None:
        run.ema.module.load_state_dict(checkpoint["ema"])
        run.ema.updates = checkpoint["ema_updates"]
    scheduled = [(group["lr"], group["initial_lr"]) for group in run.optimizer.param_groups]
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    for group, (lr, initial_lr) in zip(run.optimizer.param_groups, scheduled):  # this run's schedule, not the old one's end
        group["lr"], group["initial_lr"] = lr, initial_lr


def _validate(run: _Run, eval_policy: Policy, step: int) -> dict[str, float]:
    """The validation metrics at ``step`` (val_loss, + val_flow_loss for flow policies, of the evaluated
    policy; val_loss_raw of the raw weights); the best val_loss is kept in ``run.best``."""
    val = validation_metrics(eval_policy, run.valid_windows)
    if run.best is None or val["val_loss"] < run.best["val_loss"]:
        run.best = {"val_loss": val["val_loss"], "step": step}
    return {**val, "val_loss_raw": validation_loss(run.policy, run.valid_windows)}


def _evaluate(run: _Run, evaluator: Evaluator, eval_policy: Policy, step: int) -> dict[str, float]:
    """The evaluator's metrics at ``step`` (the policy in eval mode)."""
    metrics = evaluator(eval_policy.eval(), step)
    # Without the EMA, eval_policy is the policy being trained: back to training mode, or DoPr's hooks
    # (training-mode forwards only) record nothing from here on.
    run.policy.train()
    rate = metrics.get("eval_success_rate")
    if rate is not None and (run.best_eval is None or rate > run.best_eval["eval_success_rate"]):
        run.best_eval = {"eval_success_rate": rate, "step": step}  # the earliest step of the best rate
    return metrics


def _save(run: _Run, step: int, elapsed_s: float) -> None:
    """The checkpoint at ``step``, after ``elapsed_s`` seconds of training (rank 0 writes it, atomically)."""
    if run.rank == 0:
        save_atomic(_checkpoint_dict(run, step, elapsed_s), run.run_dir / CHECKPOINT_NAME)


def _open_log(run: _Run, dopr: bool, progress: bool) -> MetricsLog:
    """The run's metrics log; for DoPr, its coverage table (which parameters get AP) written beside it."""
    if run.rank == 0 and dopr:
        coverage = run.optimizer.format_coverage()
        write_text_atomic(run.run_dir / COVERAGE_FILE, coverage + "\n")
        if progress:
            print(f"{run.config.optimizer}: which parameters get activation preconditioning\n{coverage}", flush=True)
    return MetricsLog(run.run_dir, enabled=run.rank == 0)


class _LossMeter:
    """The mean training loss between log points, and the first step whose loss was not finite.

    Both stay on the device: reading the loss each step would make the host wait for the device
    every step. They are read where the loop syncs anyway (when it logs, validates or checkpoints).
    """

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0
        self.first_bad_step = torch.full((), -1, dtype=torch.int64, device=device)

    def add(self, loss: torch.Tensor, step: int) -> None:
        detached = loss.detach().double()
        self.first_bad_step = torch.where((self.first_bad_step < 0) & ~torch.isfinite(detached), step,
                                          self.first_bad_step)
        self.total += detached
        self.count += 1

    def mean(self) -> float:
        """The mean since the last call (which starts a new window)."""
        mean = float(self.total) / self.count
        self.total.zero_()
        self.count = 0
        return mean


def _check_finite(run: _Run, meter: _LossMeter, step: int) -> None:
    """Stop the run when the loss or the weights stopped being finite."""
    bad = int(meter.first_bad_step)
    what = f"the training loss became non-finite (nan or inf) at step {bad}"
    if bad < 0 and not all(bool(torch.isfinite(p).all()) for p in run.policy.parameters()):
        bad, what = step, f"the weights became non-finite (nan or inf) by step {step}"
    if bad >= 0:
        raise UserError(f"{what}; {_what_is_kept(run.run_dir)} (try a lower --lr, or --grad-clip)")


def _what_is_kept(run_dir: Path) -> str:
    """For a run stopped by an error: whether it left a checkpoint (without one, the same command starts
    the run over: an unstarted run directory is not refused)."""
    if (run_dir / CHECKPOINT_NAME).exists():
        return f"the last good checkpoint is kept in {run_dir}"
    return "no checkpoint was written"


@torch.no_grad()
def validation_metrics(policy: Policy, windows, batch_size: int = 1024, seed: int = 0) -> dict[str, float]:
    """``policy.validation_metrics`` over every window of the held-out episodes (eval mode; the mode
    is restored): ``val_loss``, the BC loss (for a flow policy the error of sampled actions, and its
    flow-matching loss as ``val_flow_loss``). Noise comes from a generator seeded ``seed`` on every
    call, so a sampling policy's numbers compare across steps (and the global RNG is left alone)."""
    was_training = policy.training
    policy.eval()
    generator = torch.Generator().manual_seed(seed)
    totals: dict[str, torch.Tensor] = {}
    for start in range(0, len(windows), batch_size):
        indices = torch.arange(start, min(start + batch_size, len(windows)), device=windows.device)
        for key, value in policy.validation_metrics(windows.batch(indices), generator).items():
            totals[key] = totals.get(key, 0.0) + value.double() * len(indices)
    policy.train(was_training)
    return {key: float(total) / max(len(windows), 1) for key, total in totals.items()}


def validation_loss(policy: Policy, windows, batch_size: int = 1024) -> float:
    """``val_loss`` of :func:`validation_metrics`."""
    return validation_metrics(policy, windows, batch_size)["val_loss"]


class WeightEMA:
    """The exponential moving average of a policy's weights (and floating-point buffers), for evaluation.

    After each step ``ema <- ema + (1 - decay) (theta - ema)``; the first update copies ``theta``.
    The update count is a host integer, so an update never waits for the device (torch's
    ``AveragedModel`` tests a device tensor against 0 on every update).
    """

    def __init__(self, policy: Policy, decay: float):
        self.module = copy.deepcopy(policy)  # made before the optimizer hooks the policy's layers
        self.module.requires_grad_(False)
        self.decay, self.updates = decay, 0
        self._averaged = [*self.module.parameters(), *self.module.buffers()]
        self._floating = [i for i, tensor in enumerate(self._averaged) if tensor.is_floating_point()]

    @torch.no_grad()
    def update(self, policy: Policy) -> None:
        if self.updates == 0:
            torch._foreach_copy_(self._averaged, [t.detach() for t in (*policy.parameters(), *policy.buffers())])
        else:
            self.average(policy)
        self.updates += 1

    @torch.no_grad()
    def average(self, policy: Policy) -> None:
        """The averaging of an update after the first, on tensors only (the count is the caller's): what
        the compiled training step calls."""
        current = [t.detach() for t in (*policy.parameters(), *policy.buffers())]
        torch._foreach_lerp_([self._averaged[i] for i in self._floating], [current[i] for i in self._floating],
                             1.0 - self.decay)


class _APWatch:
    """DoPr's numerics for the training log, and a stop when AP silently stops working.

    AP is skipped for a layer-step when its hooks recorded no training-mode forward (a model left in
    eval mode) or no usable factor exists; the base then gets the raw gradient and DoPr-X quietly
    becomes X. Each logged window reports the counts; a window where most layer-steps skipped stops
    the run with the last good checkpoint kept.
    """

    MIN_WINDOW = 10  # layer-steps: a lone skipped step is not a broken run

    def __init__(self, optimizer: torch.optim.Optimizer, run_dir: Path):
        self.optimizer, self.run_dir = optimizer, run_dir
        self.enabled = callable(getattr(optimizer, "numerics", None))
        self.last = optimizer.numerics() if self.enabled else {}

    def check(self, step: int) -> dict[str, int]:
        if not self.enabled:
            return {}
        now = self.optimizer.numerics()
        window = now["layer_steps"] - self.last["layer_steps"]
        skipped = now["skipped"] - self.last["skipped"]
        if window >= self.MIN_WINDOW and skipped > window / 2:
            raise UserError(
                f"DoPr skipped activation preconditioning on {skipped} of the last {window} layer-steps (up to step "
                f"{step}): its hooks saw no training-mode forwards, or every factorization failed, so the base optimizer "
                f"got raw gradients. Keep the policy in training mode (policy.train()) while training, or raise "
                f"--damping; {_what_is_kept(self.run_dir)}")
        self.last = now
        return {"dopr_layer_steps": now["layer_steps"], "dopr_skipped": now["skipped"],
                "dopr_damping_retries": now["damping_retries"]}


def _warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _check_data_fits(dataset, config: TrainConfig) -> None:
    lengths = [len(dataset.episodes[i].actions) for i in dataset.train_indices]
    if not lengths:
        raise UserError(f"{config.data} has no training episodes")
    for name in ("history", "chunk"):
        if getattr(config, name) > min(lengths):
            raise UserError(f"--{name} {getattr(config, name)} is longer than the shortest training episode "
                            f"({min(lengths)} steps); use a smaller --{name}")


def _prepare_run_dir(run_dir: Path, config: TrainConfig, resume: bool, overwrite: bool,
                     eval_settings: dict[str, Any] | None = None) -> None:
    config_file, eval_settings_file = run_dir / "config.json", run_dir / EVAL_SETTINGS_FILE
    if resume:
        # A run saved before its evaluation settings were recorded has none to compare with; none are
        # written for it either: they would claim the settings of evaluations made before this call.
        if eval_settings is not None and eval_settings_file.exists():
            refuse_changes(changed_settings(read_saved(eval_settings_file), eval_settings),
                           f"cannot resume {run_dir} with different evaluation settings",
                           f"resume with the ones in {EVAL_SETTINGS_FILE}, or start a new run directory")
        # A field added since the run was saved (amp, ...) counts as its default.
        saved = {**_field_defaults(), **read_saved(config_file)}
        current = json.loads(config.to_json())
        # A run directory moved or copied elsewhere is the same run: its out is where it lies now, and
        # demonstrations it names relative to itself (a comparison's collected file) moved with it.
        changed = changed_settings(saved, current, skip=("out",), values=False, same=lambda key, old, new: (
            same_file(old, saved["out"], new, current["out"]) if key == "data" else old == new))
        refuse_changes(changed, f"cannot resume {run_dir} with a different config",
                       "resume with the saved config, or start a new run directory")
        if saved != current:  # the saved config names the run's present place
            write_text_atomic(config_file, config.to_json() + "\n")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not config_file.exists():
            raise UserError(f"{run_dir} is not empty and holds no run (no config.json); choose another --out")
        unstarted = not (run_dir / CHECKPOINT_NAME).exists() and \
            json.loads(config_file.read_text()) == json.loads(config.to_json())
        if not overwrite and not unstarted:  # the same run, stopped before its first checkpoint, starts over
            raise UserError(f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it")
        for name in RUN_FILES:  # only what a run writes: never a user's other files
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config_file, config.to_json() + "\n")
    if eval_settings is not None:
        write_json_atomic(eval_settings_file, eval_settings)


def _field_defaults() -> dict[str, Any]:
    """TrainConfig's declared defaults in JSON form (its required fields left out)."""
    return {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(TrainConfig)
            if f.default is not MISSING or f.default_factory is not MISSING}


def _checkpoint_dict(run: _Run, step: int, elapsed_s: float) -> dict[str, Any]:
    config, dataset, policy, ema = run.config, run.dataset, run.policy, run.ema
    rng = {"torch": torch.get_rng_state(), "sampler": run.sampler.get_state()}
    if run.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(run.device)
    return {
        "format": FORMAT,
        "step": step,
        "elapsed_s": elapsed_s,
        "config": asdict(config),
        "policy": {"name": config.policy, "obs_dim": policy.obs_dim, "act_dim": policy.act_dim,
                   "history": policy.history, "chunk": policy.chunk, "config": asdict(policy.config),
                   "image_shapes": {key: list(shape) for key, shape in policy.image_shapes.items()}},
        "model": policy.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else None,
        "ema_updates": ema.updates if ema is not None else 0,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": rng,
        "dataset": {"source": str(dataset.source), "task": dataset.task, "env_kwargs": dataset.env_kwargs,
                    "obs_keys": list(dataset.obs_keys), "obs_dim": dataset.obs_dim, "act_dim": dataset.act_dim,
                    "episodes": len(dataset), "train_episodes": len(dataset.train_indices),
                    "valid_episodes": len(dataset.valid_indices), "sha256": run.data_sha256,
                    # how the data was made (collect's expert, noise, seed; an importer's provenance):
                    # reports state the settings a run actually used from here, not from a default
                    "metadata": _json_safe(dataset.metadata)},
        "best": run.best,
        "best_eval": run.best_eval,
    }


def _json_safe(value: Any) -> Any:
    """Plain JSON types only (the checkpoint loads with ``weights_only=True``)."""
    return json.loads(json.dumps(value, default=str))


def _run_device(device: str | torch.device) -> torch.device:
    """``device`` resolved for this process: under torchrun (WORLD_SIZE > 1) CUDA means cuda:LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    resolved = resolve_device(device, local_rank=int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else None)
    if resolved.type == "cuda" and world > 1:
        torch.cuda.set_device(resolved)  # NCCL's device for this rank
    return resolved


def _init_distributed(device: torch.device) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def mixed_precision(model: nn.Module, device: torch.device, amp: str) -> Callable[..., torch.Tensor]:
    """The network call of the loss. ``amp="bf16"``: under ``torch.autocast`` in bfloat16 (the
    backward follows the forward's dtypes), the output back in float32, so the loss is computed in
    float32; weights stay float32, and DoPr's hooks cast the layer inputs they record to float32."""
    if amp == "none":
        return model

    def autocast_forward(*args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return model(*args, **kwargs).float()

    return autocast_forward
