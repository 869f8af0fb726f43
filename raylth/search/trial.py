"""One search trial, run as a Ray task: its stages computed in the results
store, its intermediate values reported to the study (and the pruner asked)
as they come, its objective returned.

- distill objective: after k/(intermediate+1) of the distillation's
  iterations (step k = 1..intermediate) the current images are evaluated
  with the eval protocol on its first seed only; the objective is the
  distilled set's evaluation accuracy (mean over the eval seeds);
- ticket objective: after each level of the distilled trunk, its network's
  real test accuracy (step = level); the objective is the test accuracy of
  the distilled-pruning ticket at the first level whose sparsity reaches
  ``target_sparsity``.

A trial the pruner stops stores nothing of its stopped distillation.
"""

from __future__ import annotations

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
    ctx = StageContext(store=Store(store_root), data_root=Path(data_root), on_eval=progress.append)
    try:
        if search.objective == "distill":
            value = _distill_objective(search, params, ctx, reporter, ids)
        else:
            value = _ticket_objective(search, params, ctx, reporter, ids)
    except optuna.TrialPruned:
        return {"state": "pruned", "value": None, "artifacts": ids, "step": reporter.last_step, "progress": progress}
    return {"state": "complete", "value": value, "artifacts": ids, "progress": progress}


def _distill_objective(search: Search, params, ctx, reporter, ids) -> float:
    from raylth.stages import run_stage
    from raylth.stages.distill import run_distill
    from raylth.stages.distill_eval import evaluate_progress

    distill, evaluation = search.distill_specs(params)
    ids += [distill.id, evaluation.id]
    m = search.study["intermediate"]
    at = {max(1, round(k * distill.iterations / (m + 1))): k for k in range(1, m + 1)} if distill.iterations else {}

    def monitor(progress) -> None:
        step = at.get(progress.iteration)
        if step is not None:  # the final objective's evaluation (run_stage below), with the lr learned so far
            reporter(evaluate_progress(evaluation, progress), step)

    run_distill(distill, ctx, monitor=monitor)
    return float(run_stage(evaluation, ctx).metrics["test_acc"])


def _ticket_objective(search: Search, params, ctx, reporter, ids) -> float:
    from raylth.stages import run_stage
    from raylth.stages.ticket import distilled_imp_prepare, ticket

    trial, level = search.ticket_spec(params)
    prepare = distilled_imp_prepare(trial)
    target = ticket(trial, level)
    ids += [prepare[0].id, target.id]
    trunk_ids = {s.id for s in prepare[1:]}

    def progress(metrics: dict) -> None:  # each trunk level trained now: its real test accuracy
        if metrics.get("artifact") in trunk_ids and metrics.get("test_acc") is not None:
            reporter(metrics["test_acc"], int(metrics.get("level", 0)))

    ctx.report = progress
    for spec in prepare:
        run_stage(spec, ctx)
    ctx.report = None
    return float(run_stage(target, ctx).metrics["test_acc"])
