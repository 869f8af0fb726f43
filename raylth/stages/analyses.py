"""Analyses a sweep trial can add, each a plugin (in the manner of Method).

An analysis is a trial block (``lmc:``, ``sharpness:``): its options are one
Spec class registered with ``raylth.specs.analysis.trial_block``; here it
declares the jobs it adds to a trial and the checks of its inputs, next to its
stage's runner; its report section registers with
``raylth.reporting.sections.report_section``. Adding one: CONTRIBUTING.md,
"An analysis".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from raylth.errors import SpecError
from raylth.specs import Spec, TrialSpec

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

    @property
    def block(self) -> str:
        return self.options.label()


ANALYSES: dict[str, Analysis] = {}


def register_analysis(analysis: Analysis) -> Analysis:
    ANALYSES[analysis.block] = analysis
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


def selected(level: int, levels: tuple[int, ...], method: str) -> bool:
    """`levels` picks among a trunk's levels; a dense trial has just its one network."""
    return method == "dense" or not levels or level in levels
