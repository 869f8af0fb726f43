"""raylth: lottery tickets at cluster scale (IMP, instability, distilled pruning) on Ray."""

__version__ = "0.1.0"

import raylth.plugins  # noqa: E402,F401  (every method, analysis and distillation method registers itself)
from raylth.api import export, history, report, results, run, status, submit, verify  # noqa: E402
from raylth.errors import RaylthError  # noqa: E402

__all__ = ["run", "results", "status", "report", "submit", "verify", "export", "history", "RaylthError", "__version__"]
