"""Reports read only the store and the stage registry: results rows, tables and plots.

Importing the package imports every module in it, so that each registers its
report sections (raylth.reporting.sections); the plugins register theirs.
"""

import importlib
import pkgutil

from raylth.reporting.report import write_report
from raylth.reporting.results import columns, result_rows, results_frame

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["columns", "result_rows", "results_frame", "write_report"]
