"""Specs of the curvature analysis.

- ``HessianSpec`` (``hessian_<hash>``): the Hessian of one stored network at
  one checkpoint: its diagonal (with the probe groups' means for standard
  errors) and top eigenvalue, computed once and split by any number of masks.
- ``SharpnessSpec`` (``sharpness_<hash>``): a network's Hessian split by masks.
- ``SharpnessOptions``: a sweep trial's ``sharpness:`` block.
"""

from __future__ import annotations

from dataclasses import dataclass

from raylth.errors import SpecError
from raylth.specs import Spec
from raylth.specs.base import choice, settings
from raylth.specs.refs import check_network

BN_MODES = ("batch", "running")  # engine.sharpness.BN_MODES (specs import no engine)
WEIGHTS = ("all", "existing")


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
