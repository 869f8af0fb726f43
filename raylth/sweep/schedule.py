"""Hand a sweep's jobs to one Ray Tune run as soon as the jobs they need have
finished: a Tune ``Searcher`` that suggests job labels in dependency order.

One Tune run for the whole sweep (rather than one per stage of the pipeline)
keeps every slot busy: a seed's random-pruning control starts when that
seed's trunk is done, not when the slowest trunk is, and reused trial actors
skip a fresh worker's start-up between stages.
"""

from __future__ import annotations

import pickle

from ray.tune.search import Searcher

from raylth.sweep.jobs import Job


class DependencyOrder(Searcher):
    """Suggests ``{"trial": label}`` for the first waiting job whose needs have
    all finished; ``None`` (Tune asks again later) while every waiting job
    still needs a running one. A job that needs a failed one is not run."""

    def __init__(self, jobs: list[Job], config: dict | None = None):
        super().__init__()
        self.config = config or {}  # label -> the rest of its trial's config (trackers log it as params)
        labels = {job.label for job in jobs}
        # needs outside this run (finished before it) are met already
        self.waiting = [(job.label, set(job.needs) & labels) for job in jobs]
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.skipped: dict[str, str] = {}  # label -> the failed job it needs
        self.running: dict[str, str] = {}  # Tune trial id -> label

    def suggest(self, trial_id: str):
        self._skip_blocked()
        for index, (label, needs) in enumerate(self.waiting):
            if needs <= self.done:
                del self.waiting[index]
                self.running[trial_id] = label
                return {"trial": label, **self.config.get(label, {})}
        return None if self.waiting else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        label = self.running.pop(trial_id, None)
        if label is not None:
            (self.failed if error else self.done).add(label)

    def save(self, checkpoint_path: str) -> None:  # Tune's experiment checkpoint
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))

    def _skip_blocked(self) -> None:
        blocked = True
        while blocked:  # a skipped job blocks the jobs that need it in turn
            blocked = [(label, needs) for label, needs in self.waiting if needs & self.failed]
            for label, needs in blocked:
                self.waiting.remove((label, needs))
                self.skipped[label] = sorted(needs & self.failed)[0]
                self.failed.add(label)
