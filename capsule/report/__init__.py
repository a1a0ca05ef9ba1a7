"""Pure renderers: a folded session -> a JSON-able dict (`report_dict`) or rich renderables (`render`)."""

from __future__ import annotations

from capsule.report.json_report import report_dict, report_parts
from capsule.report.text import render, summary_line

__all__ = ["render", "report_dict", "report_parts", "summary_line"]
