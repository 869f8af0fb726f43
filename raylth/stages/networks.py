"""Stored networks named by artifact id: their training recipe, mask and checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raylth.engine.data import seed_for
from raylth.engine.masks import Mask
from raylth.errors import StoreError
from raylth.specs import DataSpec, ModelSpec, Seeds, Step, TrainSpec
from raylth.specs.refs import checkpoint_name
from raylth.stages.registry import recipe_of, stored_spec
from raylth.store import Artifact, Store


@dataclass
class Network:
    artifact: Artifact
    data: DataSpec
    model: ModelSpec
    train: TrainSpec
    seeds: Seeds

    @property
    def id(self) -> str:
        return self.artifact.id

    @property
    def level(self) -> int:
        return int(self.artifact.metrics.get("level", 0))

    @property
    def sparsity(self) -> float:
        return float(self.artifact.metrics.get("sparsity", 0.0))

    def mask(self) -> Mask | None:
        return self.artifact.mask()

    def checkpoints(self) -> list[str]:
        return sorted(name[:-3] for name in self.artifact.names("weights") if name.endswith(".pt"))

    def weights(self, checkpoint: str = "final") -> dict[str, torch.Tensor]:
        if checkpoint not in self.checkpoints():
            raise StoreError(f"{self.id} has no checkpoint {checkpoint!r} (it has: "
                             f"{', '.join(self.checkpoints())})")
        return self.artifact.weights(checkpoint)

    def at_step(self, step: Step) -> dict[str, torch.Tensor]:
        """The weights at ``step``; a clear error when training never reached it
        or it was not kept."""
        steps_per_epoch = int(self.artifact.metrics["steps_per_epoch"])
        total = self.train.duration.iterations(steps_per_epoch)
        if step.iterations(steps_per_epoch) >= total:
            raise StoreError(f"spawn: {step} is not before the end of {self.id}'s training "
                             f"({self.train.duration} = {total} iterations); use an earlier step")
        name = checkpoint_name(step)
        if name not in self.checkpoints():
            raise StoreError(
                f"spawn: {self.id} kept no checkpoint at {step} (it has: {', '.join(self.checkpoints())}); "
                f"spawn from a step it kept, or make the parent with prune.rewind: {step}")
        return self.artifact.weights(name)


def load_network(store: Store, ref: str) -> Network:
    """``ref`` is an artifact id (a ``:checkpoint`` suffix is ignored here)."""
    artifact_id = ref.split(":")[0]
    artifact = store.get(artifact_id)
    if artifact is None:
        raise StoreError(f"{artifact_id}: no such network in {store.location}; `raylth results "
                         f"{store.location}` lists the stored ids")
    return Network(artifact, *recipe_of(stored_spec(artifact), store))


def child_seeds(parent: Seeds, noise: str, index: int) -> Seeds:
    """Children differ from each other only in the SGD noise named; never in init."""
    order = seed_for(parent.order, index, "child-order") % 2**31 if noise in ("order", "both") else parent.order
    augment = (seed_for(parent.augment, index, "child-augment") % 2**31
               if noise in ("augment", "both") else parent.augment)
    return Seeds(init=parent.init, order=order, augment=augment)
