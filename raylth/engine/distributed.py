"""Data parallelism seen from the engine: this process's rank among the
training workers, and the few collective operations stages need. Ray Train
(or torchrun) sets up torch.distributed; the engine only reads it."""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as torch_dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Dist":
        if torch_dist.is_available() and torch_dist.is_initialized():
            return cls(torch_dist.get_rank(), torch_dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()

    def broadcast(self, value):
        """Rank 0's value, on every rank."""
        if self.world == 1:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]
