"""One search trial, run as a Ray task: its stages computed in the results
store, its intermediate values reported to the study (and the pruner asked)
as they come, its objective returned (raylth.search.objectives: what each
objective computes and reports). A trial the pruner stops stores nothing of
its stopped distillation.
"""

from __future__ import annotations

import sys
from pathlib import Path

from raylth.search.optuna_io import make_pruner, make_storage, quiet_optuna
from raylth.search.spec import Search


class Reporter:
    """Reports intermediate values of one trial to the study storage and asks the pruner."""

    def __init__(self, study, storage, trial_id: int):
        self.study, self.storage, self.trial_id = study, storage, trial_id
        self.last_step = None

    def __call__(self, value: float, step: int) -> None:
        import optuna

        self.storage.set_trial_intermediate_value(self.trial_id, step, float(value))
        self.last_step = step
        if self.study.pruner.prune(self.study, self.storage.get_trial(self.trial_id)):
            raise optuna.TrialPruned(f"pruned at step {step} (value {value:.4f})")


def _ray_node() -> str | None:
    """The Ray node this trial task runs on (recorded in its artifacts' metrics); None outside Ray."""
    ray = sys.modules.get("ray")
    return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None


def run_trial(search: Search, study_url: str, number: int, params: dict, store_root: str, data_root: str) -> dict:
    """One search trial in this process: its stages in the store, its
    intermediate values in the study. Returns {'state', 'value', 'artifacts', 'progress'}
    (progress: each evaluation inside its stages, raylth.stages.context.live_progress)."""
    import optuna
    import torch

    from raylth.stages import StageContext
    from raylth.store import Store

    quiet_optuna()
    storage = make_storage(study_url)
    study = optuna.load_study(study_name=search.name, storage=storage, pruner=make_pruner(search.study))
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(search.name), number)
    reporter = Reporter(study, storage, trial_id)
    ids: list[str] = []
    torch.set_num_threads(max(1, int(search.resources["cpu"] or 1)))
    progress: list[dict] = []  # each evaluation inside its stages, for the search's trackers
    ctx = StageContext(store=Store(store_root), data_root=Path(data_root), on_eval=progress.append, node=_ray_node())
    try:
        value, test = search.objective.run(search, params, ctx, reporter, ids, progress)
    except optuna.TrialPruned:
        return {"state": "pruned", "value": None, "artifacts": ids, "step": reporter.last_step, "progress": progress}
    return {"state": "complete", "value": value, "test_acc": test, "artifacts": ids, "progress": progress}
