"""The subset of Markdown that ``report.md`` uses (headings, GitHub tables, lists, paragraphs), as escaped HTML.

Not a general Markdown renderer, on purpose: report.md is written by
``batchsafe.analysis.report`` in a small fixed form, and a bundle's copy may have been
edited by anyone, so every piece of text goes through ``markupsafe.escape`` and no raw
HTML, link or image syntax is ever passed through.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def _inline(text: str) -> str:
    out = str(escape(text))
    out = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", out)
    return _BOLD.sub(lambda m: f"<strong>{m.group(1)}</strong>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def render(md: str) -> Markup:
    """``md`` as HTML; headings are shifted down two levels (the page's own h1/h2 come first)."""
    html: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if m := re.match(r"^(#{1,6})\s+(.*)$", line):
            level = min(6, len(m.group(1)) + 2)
            html.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(lines[i])
                i += 1
            rows = [_cells(x) for x in block if not re.fullmatch(r"\s*\|[\s:|-]+\|\s*", x)]
            head, body = rows[0], rows[1:]
            html.append("<table class='md'><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head)
                        + "</tr></thead><tbody>" + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r)
                                                           + "</tr>" for r in body) + "</tbody></table>")
        elif re.match(r"^\s*[-*]\s+", line):
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                items.append(re.sub(r"^\s*[-*]\s+", "", lines[i]))
                i += 1
            html.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\s*\||\s*[-*]\s)", lines[i]):
                para.append(lines[i])
                i += 1
            html.append(f"<p>{_inline(' '.join(para))}</p>")
    return Markup("\n".join(html))
