"""Specs of the instability analyses. They name the networks they study by
artifact id, so any stored network (dense, ticket, control) can be a parent.

- ``ChildSpec`` (``child_<hash>``): one copy of a parent trained on from its
  step-k checkpoint under its own SGD noise. Children are shared by every
  analysis of the same parent, k and noise.
- ``LmcSpec`` (``lmc_<hash>``): interpolation of every pair of children.
- ``SharpnessSpec`` (``sharpness_<hash>``): Hessian diagonal (split by masks)
  and top eigenvalue of one stored network.
- ``LandscapeSpec`` (``landscape_<hash>``): loss and error on the plane
  through three stored networks.
"""

from __future__ import annotations

from dataclasses import dataclass

from raylth.errors import SpecError
from raylth.specs.base import Spec, choice, settings
from raylth.specs.refs import check_network, step_key
from raylth.specs.step import Step

# A sweep trial's analysis blocks (``lmc:``, ``sharpness:``): block name -> its options class.
TRIAL_BLOCKS: dict[str, type[Spec]] = {}


def trial_block(cls: type[Spec]) -> type[Spec]:
    """Register ``cls`` (a Spec with a ``block`` name) as an analysis block of sweep trials."""
    TRIAL_BLOCKS[cls.label()] = cls
    return cls


NOISES = ("order", "augment", "both", "none")
BN_MODES = ("batch", "running")  # engine.sharpness.BN_MODES (specs import no engine)
WEIGHTS = ("all", "existing")


@dataclass(frozen=True)
class ChildSpec(Spec):
    kind = "child"
    path_prefix = ""
    parent: str = ""
    spawn: Step = Step(0, "it")
    noise: str = choice("both", NOISES)
    index: int = 0

    def validate(self):
        check_network(self.parent, "parent")
        if ":" in self.parent:
            raise SpecError("parent: name the artifact only; the checkpoint is the spawn step")
        if self.index < 0:
            raise SpecError(f"index: {self.index} must be >= 0")


class SpawnsChildren:
    """An analysis of children of ``parent`` spawned at ``spawn`` under ``noise``."""

    def child(self, index: int) -> ChildSpec:
        return ChildSpec(parent=self.parent, spawn=self.spawn, noise=self.noise, index=index)


@dataclass(frozen=True)
class LmcSettings(Spec):
    """How children are made and compared: the fields an lmc analysis hashes."""
    kind = "lmc_settings"
    block = "lmc"
    children: int = 2
    noise: str = choice("both", NOISES)
    alphas: int = 30
    bn: str = choice("interpolate", ["interpolate", "reset"])
    train_eval: int = 1000   # training images in the fixed evaluation subset
    threshold: float = 0.02  # stable: instability below this (2 points)

    def validate(self):
        if self.children < 2:
            raise SpecError(f"lmc.children: {self.children} is too few; instability compares at least 2 children")
        if self.alphas < 2:
            raise SpecError(f"lmc.alphas: {self.alphas} points cannot span a path; use at least 2 (30 is usual)")
        if self.train_eval < 1:
            raise SpecError(f"lmc.train_eval: {self.train_eval} must be >= 1")
        if not 0 < self.threshold < 1:
            raise SpecError(f"lmc.threshold: {self.threshold} must be a fraction in (0, 1), e.g. 0.02")


@dataclass(frozen=True)
class LmcSpec(SpawnsChildren, LmcSettings):
    """The analysis of one parent network at one spawn step."""
    kind = "lmc"
    path_prefix = ""
    parent: str = ""
    spawn: Step = Step(0, "it")

    def validate(self):
        super().validate()
        ChildSpec(parent=self.parent, spawn=self.spawn, noise=self.noise)

    def inputs(self) -> tuple[ChildSpec, ...]:
        return tuple(self.child(i) for i in range(self.children))

    @classmethod
    def of(cls, parent: str, spawn: Step, options: LmcSettings) -> "LmcSpec":
        return cls(parent=parent, spawn=spawn, **settings(options, LmcSettings))


@dataclass(frozen=True)
class LmcOptions(LmcSettings):
    """A sweep trial's ``lmc:`` block: the settings, and which networks."""
    kind = "lmc_options"
    levels: tuple[int, ...] = ()  # which levels of the trial (empty: all)
    landscape: bool = False  # also the plane through child 0, child 1 and the parent
    # the steps k children spawn at (empty: the trial's prune.rewind); each network is analysed
    # at every listed k it keeps weights at (a dense run: init and its rewind point)
    spawn: tuple[Step, ...] = ()

    def validate(self):
        super().validate()
        if any(level < 0 for level in self.levels):
            raise SpecError(f"lmc.levels: {list(self.levels)} must be levels >= 0")
        if len({step_key(s) for s in self.spawn}) < len(self.spawn):
            raise SpecError(f"lmc.spawn: {[str(s) for s in self.spawn]} names a step twice")


@dataclass(frozen=True)
class SharpnessSettings(Spec):
    """What a sharpness analysis hashes: the estimators' sizes and seed, the
    network whose loss it is (``bn``) and whether the diagonal is exact."""
    kind = "sharpness_settings"
    block = "sharpness"
    probes: int = 100            # Hutchinson Rademacher probes
    iterations: int = 20         # power iterations for the top eigenvalue
    batches: int = 4             # fixed training batches the loss is taken on
    batch_size: int = 128
    seed: int = 0
    # batch: BatchNorm on each fixed batch's statistics (the network the optimiser sees);
    # running: eval mode (raylth before; ids stored then mean it)
    bn: str = choice("batch", BN_MODES, id_default="running", since=3)
    exact: bool = False          # the exact diagonal (small networks; the estimator's check)
    # existing: a sparse network's Hessian over the weights it has (pruned ones do not exist:
    # their diagonal is 0 and counts nowhere); all: every prunable coordinate (raylth before)
    weights: str = choice("all", WEIGHTS)

    def validate(self):
        for name in ("probes", "iterations", "batches", "batch_size"):
            if getattr(self, name) < 1:
                raise SpecError(f"sharpness.{name}: {getattr(self, name)} must be >= 1")


@dataclass(frozen=True)
class HessianSpec(SharpnessSettings):
    """The Hessian of one stored network at one checkpoint: its diagonal (with
    the probe groups' means for standard errors) and top eigenvalue, computed
    once and split by any number of masks (SharpnessSpec)."""
    kind = "hessian"
    path_prefix = ""
    network: str = ""            # artifact id[:checkpoint]; default checkpoint: final

    def validate(self):
        check_network(self.network, "network")
        super().validate()


@dataclass(frozen=True)
class SharpnessSpec(SharpnessSettings):
    """A network's Hessian (HessianSpec), its diagonal split by masks."""
    kind = "sharpness"
    path_prefix = ""
    network: str = ""            # artifact id[:checkpoint]; default checkpoint: final
    masks: tuple[str, ...] = ()  # artifact ids whose masks split the Hessian diagonal

    def validate(self):
        check_network(self.network, "network")
        for i, ref in enumerate(self.masks):
            check_network(ref, f"masks[{i}]")
        super().validate()

    def hessian(self) -> HessianSpec:
        return HessianSpec(network=self.network, **settings(self, SharpnessSettings))

    def inputs(self) -> tuple[HessianSpec, ...]:
        return (self.hessian(),)


@dataclass(frozen=True)
class SharpnessOptions(SharpnessSettings):
    """Sharpness in a sweep (a trial's ``sharpness:``): the Hessian of the trial's
    dense network (at the rewind point k, at init, or trained), its diagonal's mass split
    by the mask of each of the trial's pruned networks. Trials of different
    methods (imp, distilled_imp, random_prune) with the same seeds split the
    same network: the paper's comparison."""
    kind = "sharpness_options"
    # init: the same network for trials whose rewind points differ (IMP-rewind beside distilled IMP)
    checkpoint: str = choice("rewind", ["rewind", "final", "init"])
    levels: tuple[int, ...] = ()  # which levels' masks (empty: all)
    # dense: the trial's dense network split by each level's mask; own: each selected network's own
    # Hessian (checkpoint final: trained, as the paper measures its tickets; init: its start)
    network: str = choice("dense", ("dense", "own"))
    weights: str = choice("existing", WEIGHTS)  # own: a sparse network's Hessian counts the weights it has

    def validate(self):
        super().validate()
        if self.network == "own" and self.checkpoint == "rewind":
            raise SpecError("sharpness.checkpoint: with network: own say final (each network trained, as the paper "
                            "measures its tickets) or init (each network's start)")

    def of(self, network: str, masks: tuple[str, ...]) -> SharpnessSpec:
        return SharpnessSpec(network=network, masks=masks, **settings(self, SharpnessSettings))


@dataclass(frozen=True)
class LandscapeSpec(Spec):
    kind = "landscape"
    path_prefix = ""
    networks: tuple[str, ...] = ()   # three artifact ids[:checkpoint]
    resolution: int = 21
    margin: float = 0.25
    split: str = choice("test", ["test", "train"])
    limit: int | None = 2000

    def validate(self):
        if len(self.networks) != 3:
            raise SpecError(f"networks: a plane needs exactly 3 networks, got {len(self.networks)}")
        for i, ref in enumerate(self.networks):
            check_network(ref, f"networks[{i}]")
        if self.resolution < 2:
            raise SpecError(f"resolution: {self.resolution} must be >= 2")


@dataclass(frozen=True)
class DistanceSettings(Spec):
    """What a weight-distance analysis hashes: which children it compares."""
    kind = "distance_settings"
    block = "distance"
    noise: str = choice("both", NOISES)


@dataclass(frozen=True)
class DistanceSpec(SpawnsChildren, DistanceSettings):
    """Per-layer distance between children 0 and 1 of a parent spawned at one
    step: ||w_0 - w_1|| / ||w_0|| over each prunable layer's weights."""
    kind = "distance"
    path_prefix = ""
    parent: str = ""
    spawn: Step = Step(0, "it")

    def validate(self):
        ChildSpec(parent=self.parent, spawn=self.spawn, noise=self.noise)

    def inputs(self) -> tuple[ChildSpec, ...]:
        return (self.child(0), self.child(1))


@dataclass(frozen=True)
class DistanceOptions(DistanceSettings):
    """A sweep trial's ``distance:`` block."""
    kind = "distance_options"
    levels: tuple[int, ...] = ()  # which levels of the trial (empty: all)


# A trial's analysis jobs come in this order (results rows too): sharpness, lmc, distance.
trial_block(SharpnessOptions)
trial_block(LmcOptions)
trial_block(DistanceOptions)
