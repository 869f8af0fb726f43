"""The Optuna objects of a search: its study's storage, sampler and pruner,
and Optuna's warnings kept quiet."""

from __future__ import annotations

import warnings
from pathlib import Path

from raylth.errors import SpecError
from raylth.search.spec import PRUNERS, SAMPLERS, split_named


def default_study_storage(store_root, name: str) -> str:
    """A SQLite file beside the results; a bucket cannot hold one."""
    if not isinstance(store_root, Path):
        raise SpecError(f"study.storage: results go to {store_root}, where a SQLite study cannot live; set "
                        "study.storage to a database URL (postgresql://...) or journal:///shared/path/NAME.log")
    return f"sqlite:///{store_root / 'optuna' / f'{name}.db'}"


def make_storage(url: str):
    """An Optuna storage for ``url``: journal:///path (JournalStorage file), else an RDB URL."""
    import optuna

    if url.startswith("journal://"):
        path = Path(url[len("journal://"):]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        return JournalStorage(JournalFileBackend(str(path)))
    kwargs = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"engine_kwargs": {"connect_args": {"timeout": 60}}}  # concurrent trial tasks write too
    return optuna.storages.RDBStorage(url, **kwargs)


def make_sampler(study: dict):
    import optuna

    name, options = split_named(study["sampler"], "study.sampler")
    if name == "tpe":
        options = {"seed": study["seed"], "constant_liar": study["concurrent"] > 1} | options
    elif study["seed"] is not None:
        options = {"seed": study["seed"]} | options
    try:
        return getattr(optuna.samplers, SAMPLERS[name])(**options)
    except TypeError as err:
        raise SpecError(f"study.sampler: {err}") from None


def make_pruner(study: dict):
    import optuna

    name, options = split_named(study["pruner"], "study.pruner")
    try:
        return getattr(optuna.pruners, PRUNERS[name])(**options)
    except TypeError as err:
        raise SpecError(f"study.pruner: {err}") from None


def optuna_experimental_warning():
    import optuna

    return optuna.exceptions.ExperimentalWarning


def quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
