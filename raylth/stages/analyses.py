"""Analyses a sweep trial can add: the registry. Each analysis is a plugin
(raylth/plugins/analyses): a trial block (``lmc:``, ``sharpness:``) whose
options are one Spec class, the jobs it adds to a trial, the checks of its
inputs, the metrics it adds to results rows; its report section registers
with ``raylth.reporting.sections.report_section`` in the same folder. One
``register_analysis`` call declares it to the specs (the block) and to the
stages (the jobs). Adding one: CONTRIBUTING.md, "An analysis".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from raylth.errors import SpecError
from raylth.specs import Spec, TrialSpec
from raylth.specs.blocks import trial_block

# (label suffix, the specs of one job[, whether its artifacts are results rows: default True]),
# e.g. ("level=3,lmc", (LmcSpec(...),))
JobSpecs = tuple


@dataclass(frozen=True)
class Analysis:
    options: type[Spec]
    # (trial, its options, the trial's result networks) -> the jobs it adds
    jobs: Callable[[TrialSpec, Spec, list[Spec]], list[JobSpecs]]
    # (every job of the sweep (.label, .specs, .ids), the store) -> raise one line when an input is missing
    check: Callable[[list, object], None] | None = None
    # metrics of its artifacts copied into their results rows (raylth.reporting.results)
    columns: tuple[str, ...] = ()
    # where its jobs (and results rows) come among a trial's analyses: lower first
    order: int = 100

    @property
    def block(self) -> str:
        return self.options.label()


ANALYSES: dict[str, Analysis] = {}


def register_analysis(analysis: Analysis) -> Analysis:
    """Declare an analysis (its plugin does, once): its trial block and its jobs."""
    if ANALYSES.get(analysis.block, analysis) != analysis:
        raise ValueError(f"analysis {analysis.block!r} is registered twice")
    ANALYSES[analysis.block] = analysis
    for name, registered in sorted(ANALYSES.items(), key=lambda item: item[1].order):  # a trial's block order
        trial_block(registered.options)
    return analysis


def analysis_jobs(trial: TrialSpec, networks: list[Spec]) -> list[JobSpecs]:
    """The jobs every analysis block of ``trial`` adds, in block order."""
    out = []
    for options in trial.analyses:
        if options.label() not in ANALYSES:
            raise SpecError(f"{options.label()}: no analysis registered for this block")
        out += ANALYSES[options.label()].jobs(trial, options, networks)
    return out


def check_analyses(jobs: list, store) -> None:
    for analysis in ANALYSES.values():
        if analysis.check is not None:
            analysis.check(jobs, store)


def result_columns() -> list[str]:
    """The metrics every registered analysis adds to results rows, in registration order."""
    return list(dict.fromkeys(column for analysis in ANALYSES.values() for column in analysis.columns))


def selected(level: int, levels: tuple[int, ...], networks: list) -> bool:
    """``levels`` picks among a trial's levels (empty: all); a trial with one network always has it analysed."""
    return len(networks) == 1 or not levels or level in levels
