"""Hyperparameter groups: data, model, training, pruning, seeds."""

from __future__ import annotations

from dataclasses import dataclass

from raylth.errors import SpecError
from raylth.specs.base import Spec, choice
from raylth.specs.step import Step


NORMALIZATIONS = ("standard", "dc")


@dataclass(frozen=True)
class DataSpec(Spec):
    kind = "data"
    name: str = "digits"
    path: str | None = None        # the file of a `tensors` data set
    test: str | None = None        # `tensors`: evaluate on this real data set's test split
    augment: bool | None = None    # None: the data set's default (CIFAR: crop + flip)
    train_size: int | None = None  # keep the first N training images (fixed order)
    # whiten train and test images with MTT's ZCA (fitted on the training split's raw [0, 1]
    # pixels, eps zca_eps): real data in the space of a ZCA-whitened distilled set, as the
    # 2023 distilled-pruning code trained its tickets
    zca: bool = False
    zca_eps: float = 0.1
    # per-channel normalisation: the set's own statistics (standard), or the constants DC, DSA,
    # DM, MTT and IDC use (dc: CIFAR-10 std 0.2023/0.1994/0.2010). DSA's brightness and
    # zero-fill act in normalised units, so the augmentation's strength depends on it.
    norm: str = choice("standard", NORMALIZATIONS)
    # the share of each class's training images held out as a validation split (a fixed draw):
    # what a search selects on, so that the test split is reported and never optimised
    validation: float = 0.0

    def validate(self):
        if self.train_size is not None and self.train_size < 1:
            raise SpecError(f"data.train_size: {self.train_size} must be at least 1 (or left out)")
        if not self.zca and self.zca_eps != 0.1:  # unused: equal computations, one id
            object.__setattr__(self, "zca_eps", 0.1)
        if not self.zca_eps >= 0:
            raise SpecError(f"data.zca_eps: {self.zca_eps} must be >= 0 (MTT: 0.1)")
        if not 0 <= self.validation < 1:
            raise SpecError(f"data.validation: {self.validation} is the share of training images held out; "
                            "use a fraction in [0, 1), e.g. 0.1")
        if self.zca and self.name == "distilled":
            raise SpecError("data.zca: a distilled set is stored in its own space; whiten it with distill.zca")
        if self.name == "tensors" and not self.path:
            raise SpecError("data.path: the tensors data set needs path: FILE.pt or FILE.npz")


@dataclass(frozen=True)
class ModelSpec(Spec):
    kind = "model"
    name: str = "lenet"
    width: int | None = None  # None: the model's standard width

    def validate(self):
        if self.width is not None and self.width < 1:
            raise SpecError(f"model.width: {self.width} must be a positive integer")


DSA_FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")
DSA_DEFAULT_OPS = "color_crop_cutout_flip_scale_rotate"  # DC/DSA/MTT's dsa_strategy
AUGMENTATIONS = ("none", "crop_flip", "dsa")
DSA_MODES = ("single", "multi", "idc")


@dataclass(frozen=True)
class AugmentSpec(Spec):
    """How training batches are augmented (``train.augment``), drawn from the
    augment seed per (seed, epoch, batch) and applied to whole batches on the
    device.

    - ``none``; ``crop_flip``: 4-pixel zero-padded random crop + horizontal flip;
      ``dsa``: differentiable siamese augmentation's families ``ops`` (joined
      by ``_``) with per-example draws, ``mode`` ``single`` (DSA's 'S': one
      family per batch), ``multi`` (DSA's 'M': all, in order) or ``idc`` (IDC's
      DiffAug, which the paper trains with: flip and color always, then one of
      the other families per batch).
    - ``cutmix``: probability per batch of CutMix (Yun et al. 2019, as IDC and
      the paper: one box per batch, lambda ~ Beta(cutmix_beta, cutmix_beta),
      partners by a permutation of the batch, loss mixed by the box's area),
      applied after the other augmentation.
    """
    kind = "augment"
    name: str = choice("crop_flip", AUGMENTATIONS)
    ops: str = DSA_DEFAULT_OPS        # dsa only
    mode: str = choice("single", DSA_MODES)  # dsa only
    cutmix: float = 0.0
    cutmix_beta: float = 1.0

    def validate(self):
        w = self.label()  # Spec.from_dict names the real path (train.augment, inner.augment)
        if self.name != "dsa":  # what only DSA reads: one id for equal computations
            object.__setattr__(self, "ops", DSA_DEFAULT_OPS)
            object.__setattr__(self, "mode", "single")
        ops = self.ops.split("_") if self.ops else []
        unknown = [op for op in ops if op not in DSA_FAMILIES]
        if unknown or not ops:
            raise SpecError(f"{w}.ops: {unknown[0] if unknown else self.ops!r} is not a DSA augmentation; "
                            f"join some of {', '.join(DSA_FAMILIES)} with _, e.g. color_crop_flip_scale_rotate")
        if not 0 <= self.cutmix <= 1:  # NaN fails too
            raise SpecError(f"{w}.cutmix: {self.cutmix} is a probability per batch; use a value in [0, 1], e.g. 0.5")
        if not self.cutmix_beta > 0:
            raise SpecError(f"{w}.cutmix_beta: {self.cutmix_beta} must be positive (CutMix's Beta parameter, e.g. 1.0)")


@dataclass(frozen=True)
class TrainSpec(Spec):
    kind = "train_options"
    block = "train"
    optimizer: str = choice("sgd", ["sgd", "adam"])
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    batch_size: int = 128
    duration: Step = Step(30, "ep")
    schedule: str = choice("cosine", ["constant", "step", "multistep", "cosine"])
    milestones: tuple[Step, ...] = ()   # multistep: multiply lr by gamma at each
    step_size: Step | None = None       # step: multiply lr by gamma every step_size
    gamma: float = 0.1
    warmup: Step = Step(0, "it")        # linear warmup from 0 to lr
    eval_every: Step | None = None      # None: once per epoch while under 1/4 of the training cost (Trainer)
    augment: AugmentSpec | None = None  # None: the data set's default (data.augment; CIFAR: crop + flip)
    # the last partial batch of an epoch: kept, as a PyTorch DataLoader does, or
    # dropped (raylth before; specs that say drop keep their old ids)
    last_batch: str = choice("keep", ["keep", "drop"], id_default="drop")

    def validate(self):
        if self.lr <= 0:
            raise SpecError(f"train.lr: {self.lr} must be positive")
        if self.batch_size < 1:
            raise SpecError(f"train.batch_size: {self.batch_size} must be at least 1")
        if self.duration.is_zero():
            raise SpecError("train.duration: must be longer than 0it (e.g. 30ep)")
        if not 0 <= self.momentum < 1:
            raise SpecError(f"train.momentum: {self.momentum} must be in [0, 1)")
        if self.weight_decay < 0:
            raise SpecError(f"train.weight_decay: {self.weight_decay} must be >= 0")
        if self.schedule == "step" and (self.step_size is None or self.step_size.is_zero()):
            raise SpecError("train.step_size: schedule step needs step_size, e.g. 30ep")
        if self.schedule == "multistep" and not self.milestones:
            raise SpecError("train.milestones: schedule multistep needs milestones, e.g. [80ep, 120ep]")
        if self.eval_every is not None and self.eval_every.is_zero():
            raise SpecError("train.eval_every: must be longer than 0it, or left out")


@dataclass(frozen=True)
class PruneSpec(Spec):
    kind = "prune"
    strategy: str = "global_magnitude"
    fraction: float = 0.2           # of the remaining weights, per level
    rewind: Step = Step(0, "it")    # 0it: rewind to init
    rewind_bn: bool = True          # BatchNorm and biases rewind too (else keep trained values)
    ignore: tuple[str, ...] = ()    # glob patterns of weight names never pruned, e.g. fc.weight

    def validate(self):
        if not 0 < self.fraction < 1:
            raise SpecError(
                f"prune.fraction: {self.fraction} is impossible; it is the share of remaining "
                "weights pruned per level and must be between 0 and 1 (e.g. 0.2)")


@dataclass(frozen=True)
class Seeds(Spec):
    kind = "seeds"
    init: int = 0      # weight initialisation
    order: int = 0     # data order, per epoch
    augment: int = 0   # augmentation draws, per epoch

    def validate(self):
        from raylth.specs.base import SEED_LIMIT

        for name in ("init", "order", "augment"):
            if not 0 <= getattr(self, name) < SEED_LIMIT:
                raise SpecError(f"seeds.{name}: {getattr(self, name)} is outside 0..2**63-1, the seeds a torch "
                                "generator takes")

    @classmethod
    def all(cls, seed: int) -> "Seeds":
        return cls(init=seed, order=seed, augment=seed)
