"""What a search optimises, each objective declared once: the base keys that
select it, the specs of one trial, its checks, how a trial runs and reports
intermediate values, and its best point as a sweep.

- ``distill``: a distilled set's evaluation accuracy (``base: {distill, eval}``);
- ``ticket``: the accuracy of the distilled-pruning ticket at the first level
  whose sparsity reaches ``target_sparsity`` (``base: {trial, target_sparsity}``).

Every value is measured on the validation split (the training images the
search holds out); the test accuracy is returned beside it for the record,
never optimised. Intermediate values are the objective's own quantity at a
partial budget, stepped by an absolute count that means the same in every trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from raylth.errors import SpecError
from raylth.specs import DistillEvalSpec, DistillSpec, TrialSpec


def level_for_sparsity(target: float, fraction: float) -> int:
    """The first IMP level whose sparsity 1 - (1 - fraction)^level reaches ``target``."""
    if not 0 < target < 1:
        raise SpecError(f"target_sparsity: {target} must be a fraction in (0, 1), e.g. 0.8")
    return max(1, math.ceil(math.log(1 - target) / math.log(1 - fraction) - 1e-9))


@dataclass(frozen=True)
class Objective:
    name: str
    selector: str                  # the base key that selects it
    base_keys: tuple[str, ...]     # the base's keys it reads
    roots: tuple[str, ...]         # the first parts of its space's dotted paths
    distill_group: str             # where its distillation's fields are (define-by-run)
    data_root: str                 # the base key whose data holds out the validation split
    required: tuple[str, ...] = ()  # base keys it cannot do without, and why
    data_default: dict | None = None  # its data when the base names none (None: required)

    # -- one trial's specs, checks, run and best point: each objective its own -----------------
    def specs(self, search, params: dict):
        raise NotImplementedError

    def as_trial(self, search) -> TrialSpec:
        """Its base point as a sweep trial (what the sweep's checks check)."""
        raise NotImplementedError

    def check(self, search, params: dict, ctx, data_root) -> None:
        raise NotImplementedError

    def run(self, search, params: dict, ctx, reporter, ids: list, progress: list) -> tuple[float, float]:
        """(validation value, test accuracy) of one trial; intermediate values go to ``reporter``."""
        raise NotImplementedError

    def best(self, search, params: dict, readable) -> dict:
        """The best trial's point as a sweep's ``base``."""
        raise NotImplementedError

    def intermediate_steps(self, search) -> list[int]:
        return []


class DistillObjective(Objective):
    def specs(self, search, params: dict) -> tuple[DistillSpec, DistillEvalSpec]:
        tree = search.tree(params)
        distill = DistillSpec.from_dict(tree["distill"], "distill")
        if distill.data is None:
            raise SpecError("base.distill.data: name the real data set, e.g. data: {name: digits}")
        return distill, DistillEvalSpec.from_dict(tree.get("eval") or {}, "eval").of(distill)

    def as_trial(self, search) -> TrialSpec:
        distill, evaluation = self.specs(search, {})
        return TrialSpec(method="distill", data=distill.data, distill=distill.replace(data=None),
                         distill_eval=evaluation.replace(distill=None))

    def check(self, search, params: dict, ctx, data_root) -> None:
        from raylth.stages.distill import check_distill

        check_distill(self.specs(search, params)[0], ctx)  # loads (or fetches) the data set once

    def intermediate_steps(self, search) -> list[int]:
        """The distillation iterations every trial is evaluated at (those it reaches):
        ``intermediate`` points evenly over the longest trial's iterations."""
        param = next((p for p in search.space if p.path == "distill.iterations"), None)
        most = int(param.high) if param is not None else self.specs(search, {})[0].iterations
        m = search.study["intermediate"]
        return sorted({max(1, round(k * most / (m + 1))) for k in range(1, m + 1)}) if most else []

    def run(self, search, params: dict, ctx, reporter, ids: list, progress: list) -> tuple[float, float]:
        """At each intermediate step the current images are evaluated with the eval protocol on its
        first seed only (the lr learned so far for MTT); the objective is the evaluation's mean."""
        from raylth.stages import run_stage
        from raylth.stages.distill import run_distill
        from raylth.stages.distill_eval import evaluate_progress

        distill, evaluation = self.specs(search, params)
        ids += [distill.id, evaluation.id]
        at = set(self.intermediate_steps(search))

        def monitor(state) -> None:
            if state.iteration in at and state.iteration < distill.iterations:
                reporter(evaluate_progress(evaluation, state, split="val"), state.iteration)

        run_distill(distill, ctx, monitor=monitor)
        metrics = run_stage(evaluation, ctx).metrics
        return float(metrics["val_acc"]), float(metrics["test_acc"])

    def best(self, search, params: dict, readable) -> dict:
        distill, evaluation = self.specs(search, params)
        return {"method": "distill", "data": readable(distill.data),
                "distill": {k: v for k, v in readable(distill).items() if k != "data"},
                "distill_eval": {k: v for k, v in readable(evaluation).items() if k not in ("distill", "random")}}


class TicketObjective(Objective):
    def specs(self, search, params: dict) -> tuple[TrialSpec, int]:
        """The trial (its levels cut at the target's) and the ticket's level."""
        tree = search.tree(params)
        trial = TrialSpec.from_dict(tree["trial"], "trial")
        level = level_for_sparsity(float(tree["target_sparsity"]), trial.prune.fraction)
        trial = trial.replace(levels=level)
        if not self._ticket(trial):
            raise SpecError(f"base.trial.method: {trial.method!r} gives no distilled-pruning tickets; a ticket "
                            "objective scores a method whose networks are tickets (e.g. distilled_imp)")
        return trial, level

    @staticmethod
    def _ticket(trial):
        """The trial's network at its last level when it is a distilled-pruning ticket, else None."""
        from raylth.plugins.methods.distilled import TicketSpec
        from raylth.stages.methods import METHODS

        method = METHODS.get(trial.method)
        networks = method.artifacts(trial) if method is not None else []
        last = networks[-1] if networks else None
        return last if isinstance(last, TicketSpec) and last.mask == "trunk" else None

    def as_trial(self, search) -> TrialSpec:
        return self.specs(search, {})[0]

    def check(self, search, params: dict, ctx, data_root) -> None:
        from raylth.stages.distill import check_distill
        from raylth.sweep.config import Sweep, Trial
        from raylth.sweep.plan import check_trials

        trial, _ = self.specs(search, params)
        check_trials(Sweep(search.name, [Trial("base", trial)]), data_root)
        check_distill(trial.distill.replace(data=trial.data), ctx)

    def run(self, search, params: dict, ctx, reporter, ids: list, progress: list) -> tuple[float, float]:
        """The ticket's validation accuracy at each evaluation of its real training (step: its
        iteration); the distilled trunk before it reports nothing (its networks' accuracy is not
        the ticket's). The objective: that accuracy at the end of the ticket's training."""
        from raylth.engine.data import steps_per_epoch
        from raylth.stages import METHODS, run_stage

        trial, _ = self.specs(search, params)
        method, target = METHODS[trial.method], self._ticket(trial)
        prepare = method.prepare(trial) if method.prepare else []
        ids += [prepare[0].id if prepare else target.id, target.id]
        for spec in prepare:
            run_stage(spec, ctx)
        n = len(ctx.dataset(target.data).train_y)
        total = target.train.duration.iterations(
            steps_per_epoch(n, target.train.batch_size, target.train.last_batch == "drop"))

        def evaluation(entry: dict) -> None:
            progress.append(entry)
            if entry.get("artifact") == target.id and entry.get("val_acc") is not None and entry["step"] < total:
                reporter(entry["val_acc"], int(entry["step"]))

        ctx.on_eval = evaluation
        metrics = run_stage(target, ctx).metrics
        return float(metrics["val_acc"]), float(metrics["test_acc"])

    def best(self, search, params: dict, readable) -> dict:
        return readable(self.specs(search, params)[0])


OBJECTIVES = {objective.selector: objective for objective in (
    DistillObjective("distill", "distill", ("distill", "eval"), ("distill", "eval"), "distill", "distill"),
    TicketObjective("ticket", "trial", ("trial", "target_sparsity"), ("trial",), "trial.distill", "trial",
                    required=("target_sparsity",), data_default={}),
)}


def objective_of(base: dict, where: str) -> Objective:
    """The objective a search's base selects (one line when none does)."""
    found = [objective for key, objective in OBJECTIVES.items() if key in base]
    if len(found) != 1:
        raise SpecError(f"{where}: base: expected one of " + " or ".join(
            f"{o.selector}: (with {', '.join(k for k in o.base_keys if k != o.selector)}:)" for o in OBJECTIVES.values()))
    return found[0]
