"""Specs of dataset distillation and distilled pruning.

- ``DistillSpec`` (``distill_<hash>``): a distilled set of ``ipc`` images per
  class made from a real data set by DM, gradient matching (DC/DSA, IDC's
  multi-formation with ``factor`` > 1) or MTT, or imported from a file
  (``method: import``). Its artifact holds ``distilled.pt`` (images, labels,
  the preprocessing they expect) and is usable as training data through
  ``DataSpec(name='distilled', path=<distill id>, test=<real set>)``.
- ``ExpertsSpec`` (``experts_<hash>``): MTT's expert trajectories, shared by
  every MTT distillation with the same data, network, expert options and
  trajectory length.
- ``DistillEvalSpec`` (``distill_eval_<hash>``): the field's evaluation of a
  distilled set (fresh networks trained on it with DSA, tested on the real
  test split, mean and std over seeds), or of a random real subset of the
  same size (``random: true``), the baseline.
- ``TicketSpec`` (``ticket_<hash>``): the mask of one IMP level and its
  rewind-point weights, trained on (real) data with its own TrainSpec: a
  distilled-pruning ticket evaluated on the full data.
- ``MaskImpSpec`` (``maskimp_<hash>``): ordinary IMP on real data started
  from a ticket (its mask and weights are the start and the rewind point),
  continued to higher levels.

Fields that do not apply to the chosen method (e.g. ``syn_steps`` for DM) are
reset to their defaults, so two specs that compute the same thing share one id.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Callable

from raylth.errors import SpecError
from raylth.specs.base import Spec, choice, resolve_defaults, resolved, settings
from raylth.specs.groups import DSA_FAMILIES, DataSpec, ModelSpec, PruneSpec, Seeds, TrainSpec
from raylth.specs.stages import ImpLevelSpec, normalize_rewind_rule, rewind_rule
from raylth.specs.step import Step

ZCA_SPACES = ("pixels", "normalized")         # engine.data.zca.ZCA_SPACES (specs import no engine)
ZCA_FIELDS = ("zca_space",)                  # meaningless without zca (zca_eps is kept: old ids)
SYNTHESIS_FIELDS = ("iterations", "lr_img", "init", "seed", "model", "dsa")  # what only synthesis reads


@dataclass(frozen=True)
class DistillMethod:
    """A distillation method as the spec sees it; its run function is
    registered under the same name in raylth.stages.distill (DISTILL_RUNNERS).
    Adding one: CONTRIBUTING.md, "A distillation method"."""
    name: str
    fields: tuple[str, ...] = ()      # DistillSpec fields only the methods naming them read
    # the default image lr (or spec -> lr: IDC scales it with ipc); None: it synthesises nothing (import)
    lr_img: float | Callable[["DistillSpec"], float] | None = None
    lr_img_zca: float | None = None   # the default with zca, where its reference differs
    factor: bool = False              # IDC multi-formation (factor > 1)
    experts: bool = False             # it needs MTT's expert trajectories
    check: Callable[["DistillSpec", str], None] | None = None  # its own fields' checks
    # its own defaults of shared fields declared ``resolved`` (IDC: factor 2, iterations 2000, ...)
    defaults: dict = field(default_factory=dict)

    @property
    def synthesizes(self) -> bool:
        return self.lr_img is not None

    def default_lr_img(self, spec: "DistillSpec") -> float:
        if spec.zca and self.lr_img_zca is not None:
            return self.lr_img_zca
        return self.lr_img(spec) if callable(self.lr_img) else self.lr_img


DISTILL_METHODS: dict[str, DistillMethod] = {}


def register_distill_method(method: DistillMethod) -> DistillMethod:
    DISTILL_METHODS[method.name] = method
    return method


def uses_field(method: str, name: str) -> bool:
    """Whether distillation ``method`` reads DistillSpec field ``name``."""
    m = DISTILL_METHODS[method]
    if name == "factor":
        return m.factor
    if not m.synthesizes and name in SYNTHESIS_FIELDS:
        return False
    owners = [other for other in DISTILL_METHODS.values() if name in other.fields]
    return not owners or m in owners


def _check_gm(spec, w: str) -> None:
    if spec.outer_loop < 1 or spec.inner_loop < 0:
        raise SpecError(f"{w}.outer_loop/inner_loop: {spec.outer_loop}/{spec.inner_loop}; "
                        "outer_loop must be >= 1 and inner_loop >= 0 (DC: ipc 10 -> 10, 50)")
    if spec.lr_net <= 0:
        raise SpecError(f"{w}.lr_net: {spec.lr_net} must be positive")


def _check_mtt(spec, w: str) -> None:
    for name in ("syn_steps", "expert_epochs", "max_start_epoch"):
        if getattr(spec, name) < 1:
            raise SpecError(f"{w}.{name}: {getattr(spec, name)} must be >= 1")
    if spec.lr_lr <= 0 or spec.lr_init <= 0:
        raise SpecError(f"{w}.lr_lr/lr_init: must be positive")
    if spec.batch_syn is not None and spec.batch_syn < 1:
        raise SpecError(f"{w}.batch_syn: {spec.batch_syn} must be >= 1 (or left out)")
    needed = spec.max_start_epoch - 1 + spec.expert_epochs
    if spec.experts.epochs < needed:
        raise SpecError(
            f"{w}.experts.epochs: {spec.experts.epochs} is too short; start epochs up to "
            f"max_start_epoch - 1 = {spec.max_start_epoch - 1} plus expert_epochs "
            f"{spec.expert_epochs} need {needed} epochs of expert trajectory")


IDC_METRICS = ("mse", "l1", "l1_mean", "cos")  # engine.distill.idc.METRICS (specs import no engine)


def _check_idc(spec, w: str) -> None:
    for name in ("outer_loop", "batch_real", "batch_syn"):
        if getattr(spec, name) < 1:
            raise SpecError(f"{w}.{name}: {getattr(spec, name)} must be >= 1 (IDC: outer_loop 100, batch_real 64, "
                            "batch_syn 128)")
    if spec.n_data < 0:
        raise SpecError(f"{w}.n_data: {spec.n_data} must be >= 0 (real images the network trains on after each "
                        "matching step; IDC: 2000)")
    if spec.lr_net <= 0:
        raise SpecError(f"{w}.lr_net: {spec.lr_net} must be positive (IDC: 0.01)")
    if not 0 <= spec.cutmix <= 1:
        raise SpecError(f"{w}.cutmix: {spec.cutmix} is a probability per batch; use a value in [0, 1] (IDC: 0.5)")
    ops = spec.match_ops.split("_") if spec.match_ops else []
    unknown = [op for op in ops if op not in DSA_FAMILIES]
    if unknown or not ops:
        raise SpecError(f"{w}.match_ops: {unknown[0] if unknown else spec.match_ops!r} is not a DSA augmentation; "
                        f"join some of {', '.join(DSA_FAMILIES)} with _ (IDC: color_crop_cutout)")
    if spec.zca:
        raise SpecError(f"{w}.zca: IDC condenses [0, 1] pixels (clamped), not ZCA-whitened images; "
                        "leave zca out with method idc")


def _idc_lr_img(spec) -> float:
    """IDC's tune_lr_img: 5e-3 at 10 images per class, in proportion to ipc (32x32 images)."""
    return 5e-3 * spec.ipc / 10


def _check_import(spec, w: str) -> None:
    if not spec.path:
        raise SpecError(f"{w}.path: method import needs path: FILE.pt (images and labels tensors, "
                        "or images only with labels: LABELS.pt)")
    if spec.space != "normalized" and spec.zca:
        raise SpecError(f"{w}.space: a ZCA-whitened file holds whitened images, not pixels; "
                        "leave space out with zca: true")


register_distill_method(DistillMethod("dm", ("batch_real",), lr_img=1.0))
register_distill_method(DistillMethod("gm", ("outer_loop", "inner_loop", "lr_net", "batch_real"), lr_img=0.1,
                                      factor=True, check=_check_gm))
register_distill_method(DistillMethod("mtt", ("syn_steps", "expert_epochs", "max_start_epoch", "lr_lr", "lr_init",
                                              "batch_syn", "low_memory", "experts"),
                                      lr_img=100.0, lr_img_zca=1000.0, experts=True, check=_check_mtt))
# IDC's condensation as its --reproduce settings for CIFAR (raylth.engine.distill.idc)
register_distill_method(DistillMethod(
    "idc", ("outer_loop", "lr_net", "batch_real", "batch_syn", "n_data", "metric", "match_ops", "cutmix"),
    lr_img=_idc_lr_img, factor=True, check=_check_idc,
    defaults={"factor": 2, "iterations": 2000, "outer_loop": 100, "batch_real": 64, "batch_syn": 128}))
register_distill_method(DistillMethod("import", ("path", "labels", "space"), factor=True, check=_check_import))


@dataclass(frozen=True)
class ExpertOptions(Spec):
    """How MTT's experts are trained (``distill.experts``)."""
    kind = "expert_options"
    block = "distill.experts"
    n: int = 5              # expert trajectories
    epochs: int = 50        # at most; only max_start_epoch + expert_epochs are trained and kept
    lr: float = 0.01        # MTT's buffer.py: SGD without momentum or weight decay
    batch: int = 256
    seed: int = 0

    def validate(self):
        for name in ("n", "epochs", "batch"):
            if getattr(self, name) < 1:
                raise SpecError(f"distill.experts.{name}: {getattr(self, name)} must be >= 1")
        if self.lr <= 0:
            raise SpecError(f"distill.experts.lr: {self.lr} must be positive")


@dataclass(frozen=True)
class DistillSpec(Spec):
    kind = "distill"
    data: DataSpec | None = None     # the real data set; in a sweep trial: the trial's data
    method: str = "dm"               # a name in DISTILL_METHODS
    ipc: int = 10                    # images per class (stored; x factor^2 decoded with factor > 1)
    iterations: int | None = resolved(1000)  # None: the method's (idc 2000), else 1000
    lr_img: float | None = None      # None: dm 1.0, gm 0.1, mtt 100 (1000 with zca), idc 5e-3 x ipc / 10
    init: str = choice("real", ["real", "noise"])
    dsa: bool = True                 # differentiable siamese augmentation while distilling
    zca: bool = False                # distil (and evaluate) in ZCA-whitened space
    zca_eps: float = 0.1
    # what ZCA whitens: raw [0, 1] pixels (MTT/KIP), or per-channel normalised
    # images (raylth before; sets stored then keep their ids and load as made)
    zca_space: str = choice("pixels", ZCA_SPACES, id_default="normalized")
    model: ModelSpec = field(default_factory=lambda: ModelSpec("conv3"))  # the distillation network
    batch_real: int | None = resolved(256)  # real images per class per matching step (dm, gm 256; idc 64)
    # gradient matching (DC/DSA; IDC with factor > 1); outer_loop: matching steps per network
    # (DC's outer_loop, IDC's inner_loop: gm 1, idc 100)
    outer_loop: int | None = resolved(1)
    inner_loop: int = 1
    lr_net: float = 0.01
    factor: int | None = resolved(1)  # gm / idc / import: IDC multi-formation (factor x factor mosaics; idc 2)
    # IDC (method idc): real images the network trains on after each matching step, the gradient
    # distance, the families augmenting a class's real and synthetic batch together (one draw),
    # and CutMix's probability in the network's training
    n_data: int = 2000
    metric: str = choice("mse", IDC_METRICS)
    match_ops: str = "color_crop_cutout"
    cutmix: float = 0.5
    # MTT
    syn_steps: int = 20
    expert_epochs: int = 2
    max_start_epoch: int = 20
    lr_lr: float = 1e-5
    lr_init: float = 0.01
    batch_syn: int | None = resolved(None)  # mtt: per student step (None: all); idc: per class and step (128)
    low_memory: bool = False         # checkpoint each student step (memory for time)
    experts: ExpertOptions = field(default_factory=ExpertOptions)
    seed: int = 0
    # import: an external file (images, labels; as MTT/IDC release them)
    path: str | None = None
    labels: str | None = None        # import: a separate labels file (MTT: images_best.pt + labels_best.pt)
    # the file's images: normalised, in the data set's pixel units (0..255), or in [0, 1] (IDC's data.pt)
    space: str = choice("normalized", ["normalized", "pixel", "unit"])

    def validate(self):
        w = "distill"
        if self.method not in DISTILL_METHODS:
            raise SpecError(f"{w}.method: {self.method!r} is not one of {', '.join(DISTILL_METHODS)}")
        # reset what the method does not use: equal computations, one id
        for f in fields(self):
            generic = f.metadata["id_default"] if f.metadata.get("resolved") else _default(f)
            if not uses_field(self.method, f.name) and getattr(self, f.name) != generic:
                object.__setattr__(self, f.name, generic)
        resolve_defaults(self)
        reset_unused_zca(self)
        check_real_data(self, w)
        if self.ipc < 1:
            raise SpecError(f"{w}.ipc: {self.ipc} must be at least 1 (images per class)")
        if self.iterations < 0:
            raise SpecError(f"{w}.iterations: {self.iterations} must be >= 0")
        if self.lr_img is not None and self.lr_img <= 0:
            raise SpecError(f"{w}.lr_img: {self.lr_img} must be positive (or left out for the method's default)")
        if self.zca_eps < 0:
            raise SpecError(f"{w}.zca_eps: {self.zca_eps} must be >= 0")
        if self.batch_real < 1:
            raise SpecError(f"{w}.batch_real: {self.batch_real} must be >= 1")
        if self.factor < 1:
            raise SpecError(f"{w}.factor: {self.factor} must be >= 1")
        if self.distill_method.check is not None:
            self.distill_method.check(self, w)

    @property
    def distill_method(self) -> DistillMethod:
        return DISTILL_METHODS[self.method]

    def resolved_defaults(self) -> dict:
        return self.distill_method.defaults if self.method in DISTILL_METHODS else {}

    def unused_fields(self) -> tuple[str, ...]:
        return () if self.zca else ZCA_FIELDS

    @property
    def lr_img_value(self) -> float:
        if self.lr_img is not None:
            return self.lr_img
        return self.distill_method.default_lr_img(self)

    def experts_spec(self) -> "ExpertsSpec":
        """The expert trajectories an MTT distillation needs: only the first
        max_start_epoch + expert_epochs epochs (later ones are never matched)."""
        return ExpertsSpec(**settings(self.experts, ExpertOptions) | {
            "epochs": min(self.experts.epochs, self.max_start_epoch + self.expert_epochs)},
            data=self.data, model=self.model, dsa=self.dsa, zca=self.zca, zca_eps=self.zca_eps,
            zca_space=self.zca_space)

    def dataset(self, augment: bool | None = None) -> DataSpec:
        """This set as training data (resolved by StageContext from the store)."""
        if self.data is None:
            raise SpecError("distill.data: name the real data set to distil, e.g. data: {name: digits}")
        return DataSpec(name="distilled", path=self.id, test=self.data.name, augment=augment)

    def baseline_key(self) -> "DistillSpec":
        """What a random real subset of the same size depends on."""
        return DistillSpec(data=self.data, ipc=self.ipc, zca=self.zca, zca_eps=self.zca_eps,
                           zca_space=self.zca_space)


def _default(f):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def reset_unused_zca(spec) -> None:
    """Without ZCA its space means nothing: one value (and, by
    ``unused_fields``, left out of every rendering), so that equal
    computations are equal specs with one id."""
    if not spec.zca:
        object.__setattr__(spec, "zca_space", "pixels")


def check_real_data(spec, where: str) -> None:
    if spec.data is not None and spec.data.zca:
        raise SpecError(f"{where}.data.zca: distil the raw data set (ZCA is the distillation's own zca: true); "
                        "data.zca whitens the real data networks train on")


@dataclass(frozen=True)
class ExpertsSpec(ExpertOptions):
    """The trajectories themselves: ExpertOptions (n, lr, batch, seed) for one
    data set, network and space."""
    kind = "experts"
    block = None
    path_prefix = ""
    epochs: int = 20  # exactly these (the stage's default differs from the option's 50)
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=lambda: ModelSpec("conv3"))
    dsa: bool = True
    zca: bool = False
    zca_eps: float = 0.1
    zca_space: str = choice("pixels", ZCA_SPACES, id_default="normalized")
    seed: int = 0

    def unused_fields(self) -> tuple[str, ...]:
        return () if self.zca else ZCA_FIELDS

    def validate(self):
        reset_unused_zca(self)
        check_real_data(self, "experts")
        super().validate()


# An evaluation protocol's own defaults of the fields declared ``resolved`` (epochs, batch_size).
EVAL_PROTOCOLS = {"dc": {}, "idc": {"epochs": 1000, "batch_size": 64}}


@dataclass(frozen=True)
class DistillEvalSpec(Spec):
    """The evaluation protocol of a distilled set: ``dc`` (DC/DSA/DM/MTT's
    evaluate_synset: 300 epochs, batch 256, lr x0.1 with a fresh optimiser at
    half time, DSA per example) or ``idc`` (IDC's test.py: 1,000 epochs, batch
    64, lr x0.2 at 2/3 and 5/6, IDC's DSA less cutout plus CutMix p 0.5,
    evaluated at each quarter: final and best reported). In a sweep trial
    (``distill_eval:``) ``distill`` and ``random`` are left out: the trial's
    distillation is evaluated and so is a random subset of the same size."""
    kind = "distill_eval"
    distill: DistillSpec | None = None
    random: bool = False             # evaluate a random real subset of the same size instead
    model: ModelSpec = field(default_factory=lambda: ModelSpec("conv3"))
    epochs: int | None = resolved(300)      # None: the protocol's (dc 300, idc 1000)
    lr: float | None = None          # None: the set's learned lr (MTT) or 0.01
    batch_size: int | None = resolved(256)  # None: the protocol's (dc 256, idc 64)
    seeds: tuple[int, ...] = (0, 1, 2)
    dsa: bool = True
    subset_seed: int = 0             # random: which subset
    protocol: str = choice("dc", tuple(EVAL_PROTOCOLS))

    def resolved_defaults(self) -> dict:
        return EVAL_PROTOCOLS.get(self.protocol, {})

    def validate(self):
        resolve_defaults(self)
        if self.epochs < 1:
            raise SpecError(f"distill_eval.epochs: {self.epochs} must be >= 1")
        if self.batch_size < 1:
            raise SpecError(f"distill_eval.batch_size: {self.batch_size} must be >= 1")
        if not self.seeds:
            raise SpecError("distill_eval.seeds: name at least one seed, e.g. [0, 1, 2]")
        if self.lr is not None and self.lr <= 0:
            raise SpecError(f"distill_eval.lr: {self.lr} must be positive (or left out)")
        if self.random and self.distill is not None and self.distill != self.distill.baseline_key():
            object.__setattr__(self, "distill", self.distill.baseline_key())
        if not self.random and self.subset_seed != 0:
            object.__setattr__(self, "subset_seed", 0)

    def of(self, distill: DistillSpec, random: bool = False) -> "DistillEvalSpec":
        """These options applied to ``distill`` (or to its random baseline)."""
        return self.replace(distill=distill.baseline_key() if random else distill, random=random)


@dataclass(frozen=True)
class TicketSpec(Spec):
    kind = "ticket"
    path_prefix = ""
    trunk: ImpLevelSpec = field(default_factory=ImpLevelSpec)  # its mask and rewind point
    data: DataSpec = field(default_factory=DataSpec)            # trained on (the real data)
    train: TrainSpec = field(default_factory=TrainSpec)
    seeds: Seeds = field(default_factory=Seeds)                 # order/augment (init: the trunk's)
    # biases and BatchNorm: as the trunk's prune.rewind_bn (false: as its level L-1 trained them on
    # the distilled set, as the paper's code); tickets stored before rewound them (raylth.specs.stages)
    rewind_rule: str = rewind_rule()
    # trunk: the level's mask (a distilled-pruning ticket); random: a random mask with its
    # per-layer counts drawn from ``seed``, started alike (the control of distilled_random)
    mask: str = choice("trunk", ("trunk", "random"))
    seed: int = 0

    def validate(self):
        normalize_rewind_rule(self, self.trunk)
        if self.mask == "trunk" and self.seed != 0:  # it draws nothing: one id
            object.__setattr__(self, "seed", 0)

    @property
    def rewind_bn(self) -> bool:
        return self.rewind_rule == "full" or self.trunk.prune.rewind_bn

    @property
    def level(self) -> int:
        return self.trunk.level

    @property
    def model(self) -> ModelSpec:
        return self.trunk.model


@dataclass(frozen=True)
class MaskImpSpec(Spec):
    kind = "maskimp"
    path_prefix = ""
    start: TicketSpec = field(default_factory=TicketSpec)  # mask and weights: start and rewind point
    prune: PruneSpec = field(default_factory=PruneSpec)    # fraction, strategy (rewind: the start)
    level: int = 2                                         # > start.level

    def validate(self):
        if not self.prune.rewind.is_zero():  # the start ticket is the rewind point
            object.__setattr__(self, "prune", self.prune.replace(rewind=Step(0, "it")))
        if self.level <= self.start.level:
            raise SpecError(f"level: {self.level} must be above the start ticket's level {self.start.level}")

    def at_level(self, level: int) -> "MaskImpSpec":
        return self.replace(level=level)


def level_for_sparsity(target: float, fraction: float) -> int:
    """The first IMP level whose sparsity 1 - (1 - fraction)^level reaches ``target``."""
    if not 0 < target < 1:
        raise SpecError(f"target_sparsity: {target} must be a fraction in (0, 1), e.g. 0.8")
    return max(1, math.ceil(math.log(1 - target) / math.log(1 - fraction) - 1e-9))


INNER_EXAMPLE = "{lr: 0.05, batch_size: 10, duration: 40ep}"


TRIAL_METHODS_WITH_DISTILL = ("distill", "distilled_imp", "distilled_random", "mask_then_imp")  # read trial.distill


def check_distilled_trial(trial) -> None:
    """The distillation fields of a sweep trial (TrialSpec.validate calls this)."""
    if trial.distill is not None and trial.distill.data is not None:
        raise SpecError("distill.data: leave it out in a trial; the trial's data is distilled")
    if trial.distill_eval is not None and (trial.distill_eval.distill is not None or trial.distill_eval.random):
        raise SpecError("distill_eval: leave out distill and random in a trial; the trial's distillation "
                        "and a random subset of the same size are both evaluated")
    if trial.method in TRIAL_METHODS_WITH_DISTILL and trial.distill is None:
        raise SpecError(f"distill: method {trial.method} needs a distill: block, e.g. "
                        "distill: {method: dm, ipc: 10, iterations: 1000, model: {name: conv3}}")
    if trial.method in ("distilled_imp", "distilled_random", "mask_then_imp") and trial.inner is None:
        raise SpecError(f"inner: method {trial.method} trains every level on the distilled set with its own "
                        f"inner: TrainSpec, e.g. inner: {INNER_EXAMPLE}")
    if trial.method == "mask_then_imp" and not 1 <= trial.start_level < trial.levels:
        raise SpecError(f"start_level: {trial.start_level} must be a distilled-pruning level in 1..levels-1 "
                        f"(levels: {trial.levels}); mask_then_imp continues IMP from it up to `levels`")
    if trial.start_level < 0:
        raise SpecError(f"start_level: {trial.start_level} must be >= 0")
    d = trial.distill
    if trial.data.zca and d is not None and not d.zca:
        raise SpecError("data.zca: the real data is ZCA-whitened but the distilled set is not; set distill.zca: "
                        "true (tickets then train in the set's space) or leave data.zca out")
    if trial.data.zca and d is not None and d.zca and (d.zca_space != "pixels" or d.zca_eps != trial.data.zca_eps):
        raise SpecError(f"data.zca: the real data is whitened in pixel space with zca_eps {trial.data.zca_eps}, "
                        f"the distilled set in {d.zca_space} space with {d.zca_eps}; use the same ZCA "
                        "(distill.zca_space: pixels, equal zca_eps) so tickets train in the set's space")
    if trial.method in ("distilled_imp", "distilled_random", "mask_then_imp"):
        rewind, duration = trial.prune.rewind, trial.inner.duration
        if rewind.unit == duration.unit and rewind.amount >= duration.amount:
            raise SpecError(f"prune.rewind: {rewind} is not before the end of the distilled training "
                            f"(inner.duration: {duration})")
