"""One search trial, run as a Ray task: its stages computed in the results
store, its intermediate values reported to the study (and the pruner asked)
as they come, its objective returned.

Every value is measured on the validation split (the training images the
search holds out, raylth.search.spec); the test accuracy is returned beside
the objective, for the record, never optimised. Intermediate values are the
objective's own quantity at a partial budget, stepped by an absolute count:

- distill objective: at each of ``Search.intermediate_steps()`` (fixed
  iteration numbers, the same in every trial) the current images are
  evaluated with the eval protocol on its first seed only; the objective is
  the distilled set's evaluation accuracy (mean over the eval seeds);
- ticket objective: the ticket's accuracy at each evaluation of its real
  training (step: the iteration); the objective is that accuracy at the end
  of the training of the ticket at the first level whose sparsity reaches
  ``target_sparsity``. The distilled trunk before it reports nothing: its
  networks' accuracy is not the ticket's.

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
            value, test = _distill_objective(search, params, ctx, reporter, ids)
        else:
            value, test = _ticket_objective(search, params, ctx, reporter, ids, progress)
    except optuna.TrialPruned:
        return {"state": "pruned", "value": None, "artifacts": ids, "step": reporter.last_step, "progress": progress}
    return {"state": "complete", "value": value, "test_acc": test, "artifacts": ids, "progress": progress}


def _distill_objective(search: Search, params, ctx, reporter, ids) -> tuple[float, float]:
    from raylth.stages import run_stage
    from raylth.stages.distill import run_distill
    from raylth.stages.distill_eval import evaluate_progress

    distill, evaluation = search.distill_specs(params)
    ids += [distill.id, evaluation.id]
    at = set(search.intermediate_steps())

    def monitor(progress) -> None:
        if progress.iteration in at and progress.iteration < distill.iterations:
            # the final objective's evaluation (run_stage below), with the lr learned so far
            reporter(evaluate_progress(evaluation, progress, split="val"), progress.iteration)

    run_distill(distill, ctx, monitor=monitor)
    metrics = run_stage(evaluation, ctx).metrics
    return float(metrics["val_acc"]), float(metrics["test_acc"])


def _ticket_objective(search: Search, params, ctx, reporter, ids, progress: list) -> tuple[float, float]:
    from raylth.stages import run_stage
    from raylth.stages.ticket import distilled_imp_prepare, ticket

    trial, level = search.ticket_spec(params)
    prepare = distilled_imp_prepare(trial)
    target = ticket(trial, level)
    ids += [prepare[0].id, target.id]
    for spec in prepare:
        run_stage(spec, ctx)

    def evaluation(entry: dict) -> None:  # the ticket's real training, evaluation by evaluation
        progress.append(entry)
        if entry.get("artifact") == target.id and entry.get("val_acc") is not None and entry["step"] < total:
            reporter(entry["val_acc"], int(entry["step"]))

    total = target.train.duration.iterations(_steps_per_epoch(target, ctx))
    ctx.on_eval = evaluation
    metrics = run_stage(target, ctx).metrics
    return float(metrics["val_acc"]), float(metrics["test_acc"])


def _steps_per_epoch(spec, ctx) -> int:
    from raylth.engine.data import steps_per_epoch

    n = len(ctx.dataset(spec.data).train_y)
    return steps_per_epoch(n, spec.train.batch_size, spec.train.last_batch == "drop")
