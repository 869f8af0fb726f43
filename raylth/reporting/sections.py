"""Report sections: each analysis (or family of stages) adds its tables and
plots to ``raylth report`` by registering one function here.

    @report_section
    def my_section(store, frame, out) -> dict[str, Path]: ...

``frame`` holds every results row (raylth.reporting.results); a section
writes its files under ``out`` and returns them by name. Sections run in the
order their modules are imported (raylth/reporting/__init__.py imports every
module of the package).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from raylth.store import Store

Section = Callable[[Store, object, Path], dict[str, Path]]
SECTIONS: list[Section] = []


def report_section(fn: Section) -> Section:
    if fn not in SECTIONS:
        SECTIONS.append(fn)
    return fn


def group_name(keys) -> str:
    """A file-name part for a (sweep, dataset, model, ...) group."""
    return "-".join(str(k) for k in keys if k) or "results"


def group_title(keys) -> str:
    """'sweep: model on dataset' for a (sweep, dataset, model) group."""
    return f"{keys[0] or 'unswept'}: {keys[2]} on {keys[1]}"
