"""Specs of the instability analysis. They name the networks they study by
artifact id, so any stored network (dense, ticket, control) can be a parent.

- ``ChildSpec`` (``child_<hash>``): one copy of a parent trained on from its
  step-k checkpoint under its own SGD noise. Children are shared by every
  analysis of the same parent, k and noise (the distance analysis's too).
- ``LmcSpec`` (``lmc_<hash>``): interpolation of every pair of children.
- ``LmcOptions``: a sweep trial's ``lmc:`` block.
"""

from __future__ import annotations

from dataclasses import dataclass

from raylth.errors import SpecError
from raylth.specs import Spec, Step
from raylth.specs.base import choice, settings
from raylth.specs.refs import check_network, step_key

NOISES = ("order", "augment", "both", "none")


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
