"""Reports read only the store: results rows, tables and plots."""

from raylth.reporting.report import write_report
from raylth.reporting.results import COLUMNS, result_rows, results_frame

__all__ = ["COLUMNS", "result_rows", "results_frame", "write_report"]
