"""The one exception type users see: a bad input, named, with its fix."""


class RaylthError(ValueError):
    """A user-facing error. Its message is one line naming the field, path or
    file at fault and what would fix it; the CLI prints it and exits 2."""


class SpecError(RaylthError):
    """A spec field has an unknown name, a wrong type or an impossible value."""


class StoreError(RaylthError):
    """The store is missing something a stage needs, or holds a broken artifact."""


class DataError(RaylthError):
    """A data set file is missing, unreadable or malformed."""
