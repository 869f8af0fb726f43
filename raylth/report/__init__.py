"""Reports read only the store: results rows, tables and plots."""

from raylth.report.report import write_report
from raylth.report.results import COLUMNS, result_rows, results_frame

__all__ = ["COLUMNS", "result_rows", "results_frame", "write_report"]
