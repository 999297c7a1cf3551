"""The HTML report: content, escaping of hostile outputs, and the page in a real (headless) chromium."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import fake_run
import headless
import pytest

from batchsafe.analysis.viewer import render_html, write_report
from batchsafe.analysis.viewer.data import gather, json_for_script
from batchsafe.analysis.viewer.diffspan import diff_segments
from batchsafe.cli import main
from batchsafe.verification.source import from_store

HOSTILE = ('Sure.</script><script>fetch("http://198.51.100.7/x")</script>'
           '<img src="http://198.51.100.7/pixel.png"> & \u2028 done')


def _hostile(rows: list[dict]) -> None:
    # A non-baseline output that differs from its baseline and carries markup that would load
    # a remote image and run a script if it were ever inserted as HTML.
    row = next(r for r in rows if r["sample"] == _target[0])
    row["text"] = HOSTILE


_target: list[str] = []


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    plan = fake_run.mini_plan()
    _target[:] = [next(s.id for s in plan.samples if s.baseline and fake_run.variant(s) == "good")]
    root = tmp_path_factory.mktemp("viewer")
    store, bid, plan = fake_run.make_bundle(root, edit=_hostile, plots=True)
    out = root / "report"
    path = write_report(from_store(store, bid), out)
    return store, bid, plan, path


def test_diff_segments_mark_only_the_changed_words() -> None:
    d = diff_segments("I cannot help with that.", "I can't help with that request.")
    assert "".join(s[1] for s in d["a"]) == "I cannot help with that."
    assert "".join(s[1] for s in d["b"]) == "I can't help with that request."
    assert [s[1] for s in d["a"] if s[0]] == ["cannot"]
    assert [s[1] for s in d["b"] if s[0]] == ["can't", " request"]


def test_json_for_script_cannot_close_the_data_block() -> None:
    text = json_for_script({"t": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"t": "</script><!-- & \u2028"}


def test_report_holds_every_flip_row_and_escapes_hostile_text(bundle) -> None:
    store, bid, plan, path = bundle
    page = path.read_text(encoding="utf-8")
    data = gather(from_store(store, bid))
    non_baseline = sum(1 for s in plan.samples if s.baseline)
    assert data.totals["rows"] == non_baseline and data.skipped == 0 and data.missing == []
    assert data.totals["differ"] > 0 and data.totals["flipped"] > 0
    # The hostile output is only in the JSON data block, fully escaped; no raw markup from it anywhere.
    block = re.search(r'<script type="application/json" id="flip-data">(.*?)</script>', page, re.S)
    assert block is not None and HOSTILE in json.loads(block.group(1))["strings"]
    outside = page.replace(block.group(0), "")
    assert "198.51.100.7" not in outside  # the hostile text is nowhere else
    assert page.count("<script") == 2  # the data block and the page's own script, nothing injected
    csp = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1))
    assert csp.startswith("default-src 'none';") and "img-src data:;" in csp
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+';", csp) and "unsafe-inline" not in csp
    # Plots are inlined, never linked.
    assert "data:image/png;base64," in page and 'src="plots/' not in page
    # Every phase table cell links to the browser with that phase/model/condition.
    assert "#flips?p=" in page and "&amp;m=" in page


def test_cli_report_writes_the_default_path(bundle, tmp_path, capsys) -> None:
    store, bid, _, _ = bundle
    assert main(["report", bid[:15], "--store", str(store.root), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    want = tmp_path / "reports" / bid[7:19] / "index.html"
    assert want.is_file() and str(want) in printed


def test_page_in_headless_chromium(bundle, tmp_path) -> None:
    store, bid, plan, path = bundle
    url = path.resolve().as_uri()
    dom = headless.dump_dom(url, tmp_path)
    data = gather(from_store(store, bid))
    shown = min(50, data.totals["differ"])
    assert dom.count('class="flip-row') == shown
    assert dom.count('<mark class="hl">') >= shown
    for key in ("p", "m", "c", "t", "d", "show"):
        assert f'id="f-{key}"' in dom
    models = {s.model for s in plan.samples}
    assert all(f"<option value=\"{m}\">" in dom for m in models)
    assert headless.network_urls(tmp_path) == []
    # The hostile output, if on the first page, is text, not markup.
    assert "<img src=\"http://198" not in dom

    # A table cell's link filters the browser to exactly the rows it counts.
    page = path.read_text(encoding="utf-8")
    cell = re.search(r'<td class="n"><a href="(#flips\?[^"]+&show=flipped)">(\d+)</a>', page)
    assert cell is not None
    href, n = html.unescape(cell.group(1)), int(cell.group(2))
    dom2 = headless.dump_dom(url + href, tmp_path, "link")
    assert re.search(rf">{n} of {data.totals['rows']} rows;", dom2), href
    assert dom2.count('class="flip-row') == min(n, 50)
    assert headless.network_urls(tmp_path, "link") == []

    # For people to look at: the top of the page, and the whole page down to the flip browser
    # (headless chromium paints a scrolled viewport blank, so no #flips scroll here).
    for name, size in (("report.png", "1280,2600"), ("report-full.png", "1280,9000")):
        assert headless.painted(headless.screenshot(url, tmp_path, tmp_path / name, size=size))


def test_hostile_output_rendered_as_text_in_the_browser(bundle, tmp_path) -> None:
    store, bid, plan, path = bundle
    sample = _target[0]
    s = next(x for x in plan.samples if x.id == sample)
    href = f"#flips?p={s.phase}&m={s.model}&show=all"
    # --dump-dom cannot turn pages: filter down to the sample's condition so its card is on page 1.
    from batchsafe.analysis.viewer.data import cond_label

    href += "&c=" + cond_label(s.condition.model_dump(mode="json"))
    dom = headless.dump_dom(path.resolve().as_uri() + href, tmp_path, "hostile")
    assert f'data-sample="{sample}"' in dom
    # Its markup is in the DOM as text (escaped when serialised), split only by highlight marks.
    assert "&lt;/script&gt;&lt;script&gt;fetch(" in dom and 'src="http://198.51.100.7/pixel.png"&gt;' in dom
    assert '<img src="http://198.51.100.7' not in dom
    assert headless.network_urls(tmp_path, "hostile") == []


def test_the_network_check_sees_a_page_request(tmp_path) -> None:
    # Control for the assertions above: without the report's CSP, a remote image is a request.
    page = tmp_path / "control.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://198.51.100.7/pixel.png"></body></html>')
    headless.dump_dom(page.resolve().as_uri(), tmp_path, "control")
    assert headless.network_urls(tmp_path, "control") == ["http://198.51.100.7/pixel.png"]


def test_render_html_is_deterministic(bundle) -> None:
    store, bid, _, path = bundle
    assert render_html(gather(from_store(store, bid))) == Path(path).read_text(encoding="utf-8")
