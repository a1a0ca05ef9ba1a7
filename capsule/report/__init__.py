"""Pure renderers: a folded session -> a JSON-able dict (`report_dict`) or rich renderables (`render`)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from capsule.report.json_report import report_dict, report_parts
    from capsule.report.text import render, summary_line


def __getattr__(name: str) -> object:
    # On first use (PEP 562): `report --json` needs the JSON report, not rich and the text renderer.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in ("render", "summary_line"):
        from capsule.report import text as home
    else:
        from capsule.report import json_report as home  # type: ignore[no-redef]
    globals()[name] = value = getattr(home, name)
    return value


__all__ = ["render", "report_dict", "report_parts", "summary_line"]
