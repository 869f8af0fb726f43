"""The one exception type users see: a bad input, named, with its fix."""


class RaylthError(ValueError):
    """A user-facing error. Its message is one line naming the field, path or
    file at fault and what would fix it; the CLI prints it and exits
    ``exit_code`` (2: a bad input, found before anything ran)."""

    exit_code = 2


class Interrupted(RaylthError):
    """Ctrl-C or SIGTERM stopped a run; what finished is kept (exit 130, as a shell does)."""

    exit_code = 130


class StorageFault(RaylthError):
    """The storage failed mid-run (a full disk, a lost mount): what finished is kept; rerun to continue."""

    exit_code = 1


class SpecError(RaylthError):
    """A spec field has an unknown name, a wrong type or an impossible value."""


class StoreError(RaylthError):
    """The store is missing something a stage needs, or holds a broken artifact."""


class StoreUnreachable(StoreError):
    """The storage kept failing (its retries spent) or could not be reached: nothing stored is
    damaged or lost, so nothing is moved aside; rerun the same command (exit 1)."""

    exit_code = 1


class DataError(RaylthError):
    """A data set file is missing, unreadable or malformed."""


class WontFitError(RaylthError):
    """A job needs more memory than the worker it runs on has (an estimate, before it starts)."""


def did_you_mean(name, known) -> str:
    """' (did you mean 'levels'?)' for a close known name, else ''."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(raw: dict, known, where: str, what: str = "known keys", top_level: bool = False) -> None:
    """Raise one line naming the first unknown key of ``raw`` (sorted), a close
    known key, and ``what`` the known keys are: ``WHERE.KEY: unknown key (did
    you mean 'k'?); WHAT are a, b``. ``top_level``: keys at a file's top level,
    named after ``where`` (a file): ``WHERE: unknown key 'KEY' (...)``."""
    unknown = sorted(set(raw) - set(known), key=str)
    if not unknown:
        return
    key, close = unknown[0], did_you_mean(unknown[0], known)
    if top_level:
        at = f"{where}: unknown key {key!r}{close}"
    else:
        at = f"{where}.{key}: unknown key{close}" if where else f"{key}: unknown key{close}"
    raise SpecError(f"{at}; {what} are {', '.join(map(str, known))}")
