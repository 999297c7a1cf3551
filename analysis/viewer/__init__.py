"""The HTML report: one self-contained static page per bundle (``batchsafe report ID``).

Summary and targets, each phase's counts and plots, the statistics of ``report.md`` and
a flip browser (every flip-registry row with its prompt, baseline output and changed
output, the differing span highlighted, filters by phase/model/condition/task/direction,
paginated). Self-contained on purpose: a reviewer opens it from disk, offline, and a
Content-Security-Policy (``default-src 'none'``, the page's own script and style allowed
by hash, images only as ``data:``) stops the page from ever reaching the network, even
if a hostile output slipped past the escaping.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

from markupsafe import Markup

from batchsafe.core.atomic import atomic_write

from .data import ReportData, gather, json_for_script
from .markdown import render as render_markdown

__all__ = ["REPORT_FILE", "ReportData", "default_report_dir", "gather", "render_html", "write_report"]

REPORT_FILE = "index.html"


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def render_html(data: ReportData) -> str:
    """The page for ``data`` (jinja2 with autoescaping: every bundle string is escaped)."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = env.from_string(_asset("report.html.j2"))
    css, js = _asset("report.css"), _asset("report.js")
    csp = (f"default-src 'none'; img-src data:; style-src {_sha(css)}; script-src {_sha(js)}; "
           "base-uri 'none'; form-action 'none'")
    return template.render(d=data, csp=csp, css=Markup(css), js=Markup(js),
                           payload=Markup(json_for_script(data.payload)),
                           report_html=render_markdown(data.report_md))


def default_report_dir(out_root: str | Path, bundle_id: str) -> Path:
    """``<out>/reports/<first 12 hex of the bundle id>``: outside every run directory, so a
    re-run never bundles a report (the id would change)."""
    return Path(out_root) / "reports" / bundle_id.split(":", 1)[-1][:12]


def write_report(src: Any, out_dir: str | Path) -> Path:
    """Write ``<out_dir>/index.html`` for the opened bundle ``src``; return its path."""
    html = render_html(gather(src))
    return atomic_write(Path(out_dir) / REPORT_FILE, html.encode("utf-8"))
