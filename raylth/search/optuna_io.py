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
                        f"study.storage to a database URL ({POSTGRES_URL}) or journal:///shared/path/NAME.log")
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
    from sqlalchemy import exc

    try:
        return optuna.storages.RDBStorage(url, **kwargs)
    except ImportError as err:  # the dialect's DBAPI module (Optuna's ImportError names it in its cause)
        raise SpecError(f"study.storage: {_shown(url)}: its database driver is not installed "
                        f"({err.__cause__ or err}); for "
                        f"PostgreSQL: pip install 'raylth[postgres]' (psycopg 3) and {POSTGRES_URL}") from None
    except exc.ArgumentError as err:
        raise SpecError(f"study.storage: {_shown(url)} is not a database URL SQLAlchemy knows ({err}); use "
                        f"{POSTGRES_URL}, sqlite:///path.db or journal:///path.log") from None
    except exc.OperationalError as err:
        reason = str(err.orig or err).strip().splitlines()[0]
        raise SpecError(f"study.storage: cannot reach {_shown(url)} ({reason}); is the server running, the URL "
                        "right and the database created?") from None


POSTGRES_URL = "postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE"


def _shown(url: str) -> str:
    """The URL as messages show it: its password hidden."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


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
