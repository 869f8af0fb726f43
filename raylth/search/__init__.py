"""Optuna searches of distillation hyperparameters: ``kind: search`` files.

A layer above raylth.sweep (it reads files with sweep's helpers and checks
its base point as a sweep trial; sweep never imports it):

    spec.py       the file: Param, Search, parse_search
    optuna_io.py  the study's storage, sampler and pruner
    trial.py      one trial (a Ray task): its objective and pruning reports
    best.py       the best trial as a ready-to-run sweep
    driver.py     run_search: the study, trials through Ray, stale-trial recovery
"""

from raylth.search.driver import SearchOutcome, check_search, recover_stale, run_search
from raylth.search.optuna_io import make_storage
from raylth.search.spec import Param, Search, parse_search
from raylth.search.trial import run_trial

__all__ = ["Param", "Search", "SearchOutcome", "check_search", "make_storage", "parse_search", "recover_stale",
           "run_search", "run_trial"]
