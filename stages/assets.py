"""The HTML report's template, CSS and JS, read once from the package's `capsule/report/assets/`."""

from __future__ import annotations

import functools
from importlib.resources import files

from capsule.report.html import HtmlAssets


@functools.cache
def html_assets() -> HtmlAssets:
    folder = files("capsule.report") / "assets"
    return HtmlAssets(
        page=(folder / "page.html").read_text(encoding="utf-8"),
        css=(folder / "report.css").read_text(encoding="utf-8").strip(),
        js=(folder / "report.js").read_text(encoding="utf-8").strip(),
    )
