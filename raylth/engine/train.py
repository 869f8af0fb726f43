"""The training loop: one network, one TrainSpec, optional mask, resumable.

A ``Trainer`` holds everything that changes during training (weights,
optimizer, schedule, step, history), so ``state_dict()`` at an epoch end and
``load_state_dict()`` later continue bitwise-identically on CPU: each epoch's
order and augmentation come from (seed, epoch), never from a running RNG.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from raylth.engine.data import Batch, Dataset, epoch_batches, points_seen, resolve_augment, steps_per_epoch
from raylth.engine.distributed import Dist
from raylth.engine.fastpath import FastPath
from raylth.engine.masks import Mask, MaskKeeper
from raylth.engine.optim import make_optimizer, make_scheduler
from raylth.specs import Seeds, TrainSpec


EVAL_SHARE = 0.25  # the default evaluation cadence keeps test evaluation under this share of training


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, split: str = "test", batch_size: int = 1024,
             limit: int | None = None, fast: FastPath | None = None) -> dict[str, float]:
    """Mean loss and accuracy (a fraction) on a split of a device-resident
    data set; ``fast``: how the model runs (default: its device's default)."""
    x_all, y_all = data.split(split)
    if limit is not None:
        x_all, y_all = x_all[:limit], y_all[:limit]
    device = x_all.device
    fast = fast or FastPath.for_device(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(y_all), batch_size):
        x = fast.layout(data.normalize(x_all[start:start + batch_size].float()))
        y = y_all[start:start + batch_size]
        with fast.autocast():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = max(1, len(y_all))
    return {"loss": float(loss_sum) / n, "acc": int(correct) / n}


class Trainer:
    def __init__(self, model: nn.Module, data: Dataset, spec: TrainSpec, seeds: Seeds, *,
                 augment: bool = False, mask: Mask | None = None, device: torch.device | None = None,
                 dist: Dist | None = None, compile: bool = False, fast: bool | None = None):
        self.device = device or default_device()
        self.fast = FastPath.for_device(self.device, fast)  # bf16, channels_last, fused optimizer
        self.dist = dist or Dist()
        self.model = self.fast.prepare(model)  # the module: weights, eval, checkpoints
        self.data = data.to(self.device)
        # the TrainSpec's augmentation, else the data set's default (``augment``)
        self.spec, self.seeds = spec, seeds
        self.augment = resolve_augment(spec.augment if spec.augment is not None else augment)
        self.drop_last = spec.last_batch == "drop"
        self.steps_per_epoch = steps_per_epoch(len(self.data.train_y), spec.batch_size, self.drop_last)
        self.total_steps = spec.duration.iterations(self.steps_per_epoch)
        self.mask_keeper = MaskKeeper(self.model, mask)
        self.net = self._data_parallel() if self.dist.world > 1 else self.model  # what trains
        if compile:  # compiled on the first step; benchmarks keep that warm-up out of their timings
            self.net = torch.compile(self.net)
        self.optimizer = make_optimizer(self.model.parameters(), spec, self.fast.optimizer_options())
        self.scheduler = make_scheduler(self.optimizer, spec, self.steps_per_epoch)
        self.step = 0
        self.history: list[dict] = []
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0

    def _data_parallel(self) -> nn.Module:
        n = len(self.data.train_y)
        batch = min(self.spec.batch_size, n)
        if batch % self.dist.world:
            raise ValueError(f"train.batch_size: {batch} does not split evenly over {self.dist.world} "
                             "workers; use a multiple of the worker count")
        rest = 0 if self.drop_last else n % batch
        if rest % self.dist.world:  # unequal shards would weight examples unequally (an empty one: NaN)
            raise ValueError(f"train.last_batch: the last batch of each epoch holds {rest} of the {n} examples, "
                             f"which does not split evenly over {self.dist.world} workers; use last_batch: drop "
                             "or a batch_size that leaves a multiple of the worker count")
        if self.device.type == "cuda":
            # SyncBatchNorm: statistics over the global batch, as on one worker. It has
            # no CPU kernel: on CPU each rank normalises by its own shard (plain DDP).
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def points_seen(self, steps: int | None = None) -> int:
        """Training examples in the first ``steps`` steps (default: so far)."""
        return points_seen(len(self.data.train_y), self.spec.batch_size,
                           self.step if steps is None else steps, self.drop_last)

    def iterations(self, step) -> int:
        """A Step (or int) -> iteration count for this run."""
        return step if isinstance(step, int) else step.iterations(self.steps_per_epoch)

    def start_at(self, step: int) -> None:
        """Begin at ``step`` (a rewind point): the schedule and the data order
        continue from there; the optimizer's state starts fresh."""
        self.step = step
        self.scheduler.last_epoch = step - 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            self.scheduler.step()

    # -- state ---------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "step": self.step,
                "history": list(self.history), "loss_sum": float(self._loss_sum),
                "loss_count": self._loss_count}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.history = list(state["history"])
        self._loss_sum = torch.tensor(state["loss_sum"], device=self.device)
        self._loss_count = state["loss_count"]

    def weights(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the model's state (parameters and buffers)."""
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.model.state_dict().items()}

    # -- loop ----------------------------------------------------------------
    def _eval_due(self) -> bool:
        return self.step % self.eval_period == 0 or self.step == self.total_steps

    @functools.cached_property
    def eval_period(self) -> int:
        """Steps between test evaluations: ``eval_every``, else once per epoch
        as long as evaluating stays under EVAL_SHARE of the training cost, else
        evenly fewer times (always at the last step). Cost model, taken
        conservatively: a test image costs as much as a training example
        (measured on CPU, ResNet-18 width 16: 1.2 ms each, the forward pass of
        a batch of 1,024 against the step of a batch of 64), so k evaluations
        of T test images cost k * T training points. A distilled set of 100
        images tested on 10,000 is evaluated once in 300 epochs, at the end."""
        if self.spec.eval_every is not None:
            return self.iterations(self.spec.eval_every)
        epochs = -(-self.total_steps // self.steps_per_epoch)
        affordable = int(EVAL_SHARE * self.points_seen(self.total_steps) / max(1, len(self.data.test_y)))
        return -(-self.total_steps // max(1, min(epochs, affordable)))

    def _record_eval(self) -> None:
        test = evaluate(self.model, self.data, "test", fast=self.fast)
        # the held-out training images (data.validation): what a search selects on
        val = {} if self.data.val_x is None else {
            f"val_{k}": v for k, v in evaluate(self.model, self.data, "val", fast=self.fast).items()}
        if self.dist.world > 1:  # each rank's loss is its shard's mean: average them
            torch.distributed.all_reduce(self._loss_sum)
            self._loss_sum /= self.dist.world
        train_loss = float(self._loss_sum) / self._loss_count if self._loss_count else None
        self.history.append({"step": self.step, "epoch": self.step / self.steps_per_epoch,
                             "train_loss": train_loss, "test_loss": test["loss"],
                             "test_acc": test["acc"]} | val)
        self._loss_sum.zero_()
        self._loss_count = 0

    def run(self, save_at: Iterable[int] = (), on_save: Callable[[int, dict], None] | None = None,
            on_epoch: Callable[["Trainer"], None] | None = None,
            on_eval: Callable[[dict], None] | None = None) -> list[dict]:
        """Train from the current step to the end. ``on_save(step, weights)`` is
        called at each step in ``save_at`` (0 = before any update);
        ``on_epoch(trainer)`` after each completed epoch (for resumption);
        ``on_eval(entry)`` after each test evaluation with its history entry (live progress)."""
        save_at = set(save_at)
        if self.step in save_at and on_save:
            on_save(self.step, self.weights())
        self.model.train()
        while self.step < self.total_steps:
            epoch, start_batch = divmod(self.step, self.steps_per_epoch)
            for batch in epoch_batches(self.data, self.spec.batch_size, epoch, self.seeds, self.augment,
                                       start_batch=start_batch, rank=self.dist.rank, world=self.dist.world,
                                       drop_last=self.drop_last):
                self._train_step(batch)
                if self.step in save_at and on_save:
                    on_save(self.step, self.weights())
                if self._eval_due():
                    self._record_eval()
                    if on_eval:
                        on_eval(dict(self.history[-1]))
                if self.step >= self.total_steps:
                    break
            self.mask_keeper.reapply()
            if self.step % self.steps_per_epoch == 0 and on_epoch:
                on_epoch(self)
        return self.history

    def _train_step(self, batch: Batch) -> None:
        x = self.fast.layout(batch.x)
        with self.fast.autocast():
            loss = batch.loss(self.net(x))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self._loss_sum += loss.detach().float()
        self._loss_count += 1
        self.step += 1
