// Flip browser of a batchsafe report. Reads the JSON data block and renders one page of
// rows at a time; every bundle string goes into the DOM through textContent, never HTML.
(function () {
  "use strict";
  var PAGE = 50;
  var data = JSON.parse(document.getElementById("flip-data").textContent);
  var rows = data.rows, S = data.strings, D = data.diffs;
  var filters = ["p", "m", "c", "t", "d"];
  var state = { page: 0, show: "differ" };
  var list = document.getElementById("flip-list");
  var info = document.getElementById("flip-count");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function sel(k) { return document.getElementById("f-" + k); }

  // Options of each filter, from the rows themselves (sorted, distinct).
  filters.forEach(function (k) {
    var seen = {}, vals = [];
    rows.forEach(function (r) { if (!seen[r[k]]) { seen[r[k]] = 1; vals.push(r[k]); } });
    vals.sort();
    var s = sel(k);
    vals.forEach(function (v) { var o = el("option", null, v); o.value = v; s.appendChild(o); });
    s.addEventListener("change", function () { state.page = 0; render(); });
  });
  sel("show").addEventListener("change", function () { state.page = 0; render(); });

  function matches(r) {
    for (var i = 0; i < filters.length; i++) {
      var v = sel(filters[i]).value;
      if (v !== "" && r[filters[i]] !== v) return false;
    }
    var show = sel("show").value;
    if (show === "differ") return !r.i;
    if (show === "flipped") return !!r.f;
    if (show === "unsafe") return !!r.u;
    return true;
  }

  function output(idx, segs) {
    var pre = el("pre", "out");
    if (idx < 0) { pre.appendChild(el("em", null, "(output not in the bundle)")); return pre; }
    if (!segs) { pre.textContent = S[idx]; return pre; }
    segs.forEach(function (s) {
      pre.appendChild(s[0] ? el("mark", "hl", s[1]) : document.createTextNode(s[1]));
    });
    return pre;
  }

  function card(r) {
    var c = el("div", "flip-row" + (r.f ? " flipped" : "") + (r.u ? " unsafe" : ""));
    c.setAttribute("data-sample", r.s);
    var h = el("div", "meta");
    [["phase", r.p], ["model", r.m], ["condition", r.c], ["task", r.t]].forEach(function (kv) {
      var s = el("span", "tag"); s.appendChild(el("b", null, kv[0] + " ")); s.appendChild(document.createTextNode(kv[1]));
      h.appendChild(s);
    });
    h.appendChild(el("span", "dir " + (r.u ? "bad" : r.f ? "warn" : ""), r.f ? r.d : r.i ? "identical" : "output differs, same label"));
    h.appendChild(el("span", "ids", r.s + " vs baseline " + r.bs));
    c.appendChild(h);
    if (r.q >= 0) {
      var d = el("details", "prompt"); d.appendChild(el("summary", null, "prompt"));
      d.appendChild(el("pre", "out", S[r.q])); c.appendChild(d);
    }
    var diff = r.x >= 0 ? D[r.x] : null;
    var g = el("div", "pair");
    var a = el("div", "side"); a.appendChild(el("h4", null, "baseline (" + r.l0 + ")")); a.appendChild(output(r.a, diff && diff.a));
    var b = el("div", "side"); b.appendChild(el("h4", null, r.c + " (" + r.l1 + ")")); b.appendChild(output(r.b, diff && diff.b));
    g.appendChild(a); g.appendChild(b); c.appendChild(g);
    return c;
  }

  function render() {
    var hits = rows.filter(matches);
    var pages = Math.max(1, Math.ceil(hits.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    while (list.firstChild) list.removeChild(list.firstChild);
    hits.slice(state.page * PAGE, (state.page + 1) * PAGE).forEach(function (r) { list.appendChild(card(r)); });
    info.textContent = hits.length + " of " + rows.length + " rows; page " + (state.page + 1) + " of " + pages;
    document.getElementById("prev").disabled = state.page === 0;
    document.getElementById("next").disabled = state.page >= pages - 1;
  }
  document.getElementById("prev").addEventListener("click", function () { state.page--; render(); });
  document.getElementById("next").addEventListener("click", function () { state.page++; render(); });

  // Table cells link to "#flips?p=..&m=..&c=..&show=..": set the filters from the hash.
  function fromHash() {
    var h = location.hash, q = h.indexOf("?");
    if (h.indexOf("#flips") !== 0) return;
    var params = new URLSearchParams(q < 0 ? "" : h.slice(q + 1));
    filters.forEach(function (k) { sel(k).value = params.get(k) || ""; });
    sel("show").value = params.get("show") || "differ";
    state.page = 0;
    render();
    document.getElementById("flips").scrollIntoView();
  }
  window.addEventListener("hashchange", fromHash);
  render();
  fromHash();
})();
