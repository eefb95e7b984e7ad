"""The HTML report's inline style sheet and its one script (pinned by hash in the page's Content-Security-Policy).

The script draws the pairs table from the JSON blob, and is the curator's triage tool: click a row (or press
Enter) to open a pair side by side at full resolution, switch to a difference or blink view of the registered
pair, walk the pairs with j/k or the arrow keys, and decide each one with 1/2/3 (same shot / not a copy /
accept). Decisions stay in the browser (``localStorage``, per report) and export as a baseline file that
``splitaudit check --baseline`` reads and as a CSV, downloaded from a Blob. Data reach the DOM through
``textContent``/``setAttribute`` only.
"""

from __future__ import annotations

CSS = """
:root{--err:#b3261e;--warn:#a45c00;--ok:#1e7a3a;--line:#ddd;--muted:#666}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
header,main{max-width:1280px;margin:0 auto;padding:0 20px}header{padding-top:16px}
h1{font-size:22px;margin:.2em 0}h2{font-size:18px;margin:1.6em 0 .5em;border-bottom:1px solid var(--line);padding-bottom:4px}
nav a{margin-right:12px}code{font:12px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.verdict{font-size:18px;font-weight:600;padding:10px 14px;border-radius:6px;margin:10px 0}
.verdict.fail{background:#fbe9e7;color:var(--err)}.verdict.pass{background:#e6f4ea;color:var(--ok)}
.counts{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0}.counts div{background:#fff;border:1px solid var(--line);border-radius:6px;padding:6px 12px}
.counts b{font-size:18px;display:block}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;color:var(--muted)}
figure.img{margin:0;display:inline-block;max-width:240px;vertical-align:top}figure.img img,span.th img{display:block;max-width:96px;max-height:96px;border:1px solid var(--line);background:#fff}
figcaption{font-size:12px}.label{background:#eef;border-radius:3px;padding:0 4px;font-size:12px}
.nothumb{width:96px;height:40px;border:1px dashed #bbb;color:#999;font-size:11px;display:flex;align-items:center;justify-content:center}
.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin:8px 0}.controls label{font-size:12px;color:var(--muted)}
tr.sev-error td:nth-child(4) .sev{color:var(--err);font-weight:600}tr.sev-warning td:nth-child(4) .sev{color:var(--warn);font-weight:600}
tr.accepted{opacity:.6}.ev{font-size:12px}.id{font:11px ui-monospace,monospace;color:var(--muted)}
.muted{color:var(--muted)}.group{background:#fff;border:1px solid var(--line);border-radius:6px;padding:8px;margin:6px 0}
.group .members{display:flex;flex-wrap:wrap;gap:10px;margin-top:6px}.kvwrap{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
table.kv th{font-weight:500}img.plot{max-width:100%;background:#fff;border:1px solid var(--line)}svg.spark{display:block;margin-top:2px}.scroll{overflow-x:auto;max-width:100%}svg.chart{background:#fff;border:1px solid var(--line)}
footer{max-width:1280px;margin:30px auto;padding:0 20px;color:var(--muted);font-size:12px}
tr[data-pair]{cursor:pointer}tr.sel td{outline:2px solid #3b6fb6;outline-offset:-2px}tr.dec-same td:first-child{box-shadow:inset 4px 0 var(--err)}
tr.dec-notcopy td:first-child,tr.dec-accept td:first-child{box-shadow:inset 4px 0 var(--ok)}
.dec button,#viewer .dec button{font-size:11px;padding:1px 5px;margin:1px;border:1px solid #bbb;background:#fff;border-radius:3px;cursor:pointer}
.dec button.on{background:#1b1b1b;color:#fff;border-color:#1b1b1b}.triage{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin:6px 0}
.keys{font-size:12px;color:var(--muted)}kbd{font:11px ui-monospace,monospace;border:1px solid #bbb;border-radius:3px;padding:0 3px;background:#fff}
#viewer{position:fixed;inset:0;background:#161616;color:#eee;z-index:10;display:flex;flex-direction:column}
#viewer[hidden]{display:none}#viewer .bar{display:flex;flex-wrap:wrap;gap:10px;align-items:center;padding:8px 14px;border-bottom:1px solid #444}
#viewer .bar button{background:#333;color:#eee;border:1px solid #555;border-radius:3px;padding:2px 8px;cursor:pointer}
#viewer .bar button.on{background:#eee;color:#111}#viewer code{color:#eee}#viewer .muted{color:#aaa}
#v-stage{flex:1;overflow:auto;padding:10px;display:flex;gap:10px;align-items:flex-start;justify-content:center}
#v-stage .pane{flex:1 1 0;min-width:0;overflow:auto;max-height:100%}#v-stage .pane img{display:block;image-rendering:auto;background:#fff}
#v-stage.fit .pane img{width:100%;height:auto;max-height:calc(100vh - 130px);object-fit:contain}#v-stage .cap{font-size:12px;margin:4px 0}
.stack{position:relative;flex:none;overflow:hidden;background:#000}.stack img{position:absolute;left:0;top:0;width:100%;height:100%;transform-origin:50% 50%}
.stack img.b.diff{mix-blend-mode:difference}svg.hist{background:#fff;border:1px solid var(--line);margin:4px 8px 4px 0}
.drift{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start;margin:8px 0 14px}.examples{display:flex;flex-wrap:wrap;gap:8px}
"""

# The only script. Data come from the JSON blobs and reach the DOM through textContent/setAttribute only.
JS = r"""(function () {
"use strict";
var D = JSON.parse(document.getElementById("sa-data").textContent);
var S = D.splits, I = D.images, T = D.thumbs, P = D.pairs, PAGE = D.page;
function $(id) { return document.getElementById(id); }
function el(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function name(i) { return S[I[i][0]] + "/" + I[i][1]; }
function fig(i) {
  var im = I[i], f = el("figure", "img");
  if (im[3] >= 0) { var g = document.createElement("img"); g.src = T[im[3]]; g.alt = ""; f.appendChild(g); }
  else f.appendChild(el("div", "nothumb", "no thumbnail"));
  var c = el("figcaption");
  c.appendChild(el("code", null, name(i)));
  if (im[2] !== null) { c.appendChild(document.createTextNode(" ")); c.appendChild(el("span", "label", im[2])); }
  f.appendChild(c);
  return f;
}
Array.prototype.forEach.call(document.querySelectorAll("span.th[data-t]"), function (n) {
  var g = document.createElement("img"); g.src = T[+n.getAttribute("data-t")]; g.alt = ""; n.appendChild(g);
});
if (!$("pairs-body")) { document.body.setAttribute("data-ready", "1"); return; }
function options(sel, values) {
  values.forEach(function (v) { var o = el("option", null, v); o.value = v; sel.appendChild(o); });
}
// -- decisions: kept in this browser per report, exported as a baseline and a CSV --------------------------------
var DECISIONS = {same: "same shot", notcopy: "not a copy", accept: "accept"}, KEYS = ["same", "notcopy", "accept"];
var STORE = "splitaudit-triage:" + D.key, dec = {};
try { dec = JSON.parse(localStorage.getItem(STORE) || "{}") || {}; } catch (e) { dec = {}; }
function save() { try { localStorage.setItem(STORE, JSON.stringify(dec)); } catch (e) { /* storage off: this tab only */ } }
function decide(j, d) {
  var id = P[j][8];
  if (!d || dec[id] === d) delete dec[id]; else dec[id] = d;
  save();
}
var checks = {}, cats = {}, pairsOf = {}, classes = {};
P.forEach(function (p) {
  checks[p[0]] = 1; cats[p[1]] = 1; pairsOf[S[I[p[3]][0]] + " \u2192 " + S[I[p[4]][0]]] = 1;
  if (I[p[3]][2] !== null) classes[I[p[3]][2]] = 1;
  if (I[p[4]][2] !== null) classes[I[p[4]][2]] = 1;
});
options($("f-check"), Object.keys(checks).sort());
options($("f-category"), Object.keys(cats).sort());
options($("f-pair"), Object.keys(pairsOf).sort());
options($("f-class"), Object.keys(classes).sort());
var rows = [], page = 0, cur = -1;
function apply() {
  var c = $("f-check").value, k = $("f-category").value, sp = $("f-pair").value, cl = $("f-class").value,
      st = $("f-status").value, q = $("f-search").value.toLowerCase(), so = $("f-sort").value, dd = $("f-decision").value;
  rows = [];
  for (var j = 0; j < P.length; j++) {
    var p = P[j], a = I[p[3]], b = I[p[4]], mine = dec[p[8]] || "";
    if (c && p[0] !== c) continue;
    if (k && p[1] !== k) continue;
    if (sp && S[a[0]] + " \u2192 " + S[b[0]] !== sp) continue;
    if (cl && a[2] !== cl && b[2] !== cl) continue;
    if (st === "new" && p[7]) continue;
    if (st === "accepted" && !p[7]) continue;
    if (dd === "undecided" ? mine : dd && mine !== dd) continue;
    if (q && (name(p[3]) + " " + name(p[4])).toLowerCase().indexOf(q) < 0) continue;
    rows.push(j);
  }
  if (so === "closest") rows.sort(function (x, y) { return P[x][6] - P[y][6] || x - y; });
  else if (so === "farthest") rows.sort(function (x, y) { return P[y][6] - P[x][6] || x - y; });
  else if (so === "path") rows.sort(function (x, y) { var u = name(P[x][4]), v = name(P[y][4]); return u < v ? -1 : u > v ? 1 : x - y; });
  page = 0; cur = rows.length ? 0 : -1;
  draw();
}
function decButtons(j) {
  var box = el("span", "dec"), mine = dec[P[j][8]];
  KEYS.forEach(function (d, n) {
    var b = el("button", mine === d ? "on" : null, (n + 1) + " " + DECISIONS[d]);
    b.type = "button"; b.setAttribute("data-decision", d);
    b.addEventListener("click", function (ev) { ev.stopPropagation(); decide(j, d); refresh(); });
    box.appendChild(b);
  });
  return box;
}
function draw() {
  var body = $("pairs-body"), n = rows.length, pages = Math.max(1, Math.ceil(n / PAGE));
  if (page >= pages) page = pages - 1;
  body.textContent = "";
  for (var r = page * PAGE; r < Math.min(n, (page + 1) * PAGE); r++) {
    var j = rows[r], p = P[j], mine = dec[p[8]];
    var tr = el("tr", (p[7] ? "accepted" : "sev-" + p[2]) + (mine ? " dec-" + mine : "") + (r === cur ? " sel" : ""));
    tr.setAttribute("data-pair", String(j));
    tr.setAttribute("data-row", String(r));
    if (mine) tr.setAttribute("data-decision", mine);
    tr.appendChild(el("td", "num", j + 1));
    var ta = el("td"); ta.appendChild(fig(p[3])); tr.appendChild(ta);
    var tb = el("td"); tb.appendChild(fig(p[4])); tr.appendChild(tb);
    var td = el("td");
    td.appendChild(el("div", "sev", p[2] + (p[7] ? " (accepted)" : "")));
    td.appendChild(el("div", null, p[0]));
    td.appendChild(el("div", "muted", p[1]));
    tr.appendChild(td);
    tr.appendChild(el("td", "ev", p[5]));
    var tdd = el("td"); tdd.appendChild(decButtons(j)); tr.appendChild(tdd);
    tr.appendChild(el("td", "id", p[8]));
    tr.addEventListener("click", (function (rr) { return function () { cur = rr; open(); }; })(r));
    body.appendChild(tr);
  }
  $("pairs-status").textContent = n + " of " + P.length + " pairs \u00b7 page " + (page + 1) + " of " + pages;
  $("prev").disabled = page === 0;
  $("next").disabled = page >= pages - 1;
  var m = Object.keys(dec).length;
  $("triage-status").textContent = m + " of " + P.length + " pairs decided";
}
function refresh() { draw(); if (!$("viewer").hidden) show(); }
// -- the enlarged view ---------------------------------------------------------------------------------------------
var FULL = null, mode = "side", fit = true, blinkTimer = null;
function full(i) {
  if (FULL === null) { var n = $("sa-full"); FULL = n ? JSON.parse(n.textContent) : []; }
  var f = FULL[i];
  return f ? f : null;
}
function src(i) { var f = full(i); return f ? f[0] : I[i][3] >= 0 ? T[I[i][3]] : null; }
function sizeText(i) {
  var f = full(i);
  if (!f) return I[i][3] >= 0 ? "thumbnail only" : "no image";
  if (f[5] === "linked") return "linked original";
  if (f[5] === "downscaled") return f[1] + "\u00d7" + f[2] + " (downscaled from " + f[3] + "\u00d7" + f[4] + ")";
  return f[1] + "\u00d7" + f[2] + (f[5] === "re-encoded" ? " (re-encoded as PNG)" : " (original file)");
}
function image(i, cls) {
  var s = src(i), g = document.createElement("img");
  g.alt = name(i); if (cls) g.className = cls;
  if (s) g.src = s;
  return g;
}
// The registration maps the first image a onto the second b after both are squashed to one square of side L:
// x_b = k R(angle) (x_a - c - d) + c, d = (dx, dy) L, c the centre (b mirrored first when "mirrored"). Drawing b
// with transform-origin at the centre, translate(d) rotate(-angle) scale(1/k) [scaleX(-1)] puts each of its points
// back where a has it (CSS applies the rightmost function first; rotate(t) is the same matrix as R(t) in
// y-down pixel coordinates), so the difference of an aligned copy is dark.
function transformOf(j, side) {
  var g = P[j][10], t = "";
  if (g) {
    t = "translate(" + (g.dx * side).toFixed(2) + "px," + (g.dy * side).toFixed(2) + "px) rotate(" + (-g.angle).toFixed(3) +
        "deg) scale(" + (1 / (g.scale || 1)).toFixed(5) + ")" + (g.mirrored ? " scaleX(-1)" : "");
  } else if (P[j][11]) t = "scaleX(-1)";
  return t;
}
function stopBlink() { if (blinkTimer !== null) { clearInterval(blinkTimer); blinkTimer = null; } }
function show() {
  stopBlink();
  var j = rows[cur], p = P[j], st = $("v-stage");
  $("v-title").textContent = (cur + 1) + " of " + rows.length + " \u00b7 " + p[0] + " \u00b7 " + p[1] + " \u00b7 " + p[5];
  $("v-names").textContent = name(p[3]) + "  \u2194  " + name(p[4]);
  var box = $("v-dec"); box.textContent = ""; box.appendChild(decButtons(j));
  ["side", "diff", "blink"].forEach(function (m) { $("v-" + m).className = m === mode ? "on" : ""; });
  $("v-fit").className = fit ? "on" : "";
  st.textContent = "";
  st.className = fit ? "fit" : "";
  st.setAttribute("data-mode", mode);
  st.setAttribute("data-pair", String(j));
  if (mode === "side") {
    [p[3], p[4]].forEach(function (i) {
      var pane = el("div", "pane");
      pane.appendChild(el("div", "cap", name(i) + " \u00b7 " + sizeText(i)));
      var g = image(i);
      // Fitted small images are enlarged with visible pixels (smoothing would invent detail); f shows 1:1.
      g.addEventListener("load", function () { if (g.naturalWidth < pane.clientWidth) g.style.imageRendering = "pixelated"; });
      pane.appendChild(g);
      st.appendChild(pane);
    });
    return;
  }
  var side = Math.max(160, Math.min(st.clientWidth - 40, st.clientHeight - 60, 720));
  var wrap = el("div"), stack = el("div", "stack");
  stack.style.width = side + "px"; stack.style.height = side + "px";
  var a = image(p[3], "a"), b = image(p[4], "b" + (mode === "diff" ? " diff" : ""));
  b.style.transform = transformOf(j, side);
  stack.appendChild(a); stack.appendChild(b);
  wrap.appendChild(el("div", "cap", (mode === "diff" ? "difference" : "blink") + " of the pair squashed to a square, " +
    (p[10] ? "b registered onto a (scale " + (+p[10].scale).toFixed(3) + ", angle " + (+p[10].angle).toFixed(1) + "\u00b0" +
             (p[10].mirrored ? ", mirrored" : "") + ")" : "unregistered" + (p[11] ? ", b mirrored" : "")) +
    (mode === "diff" ? ": black where they agree" : "")));
  wrap.appendChild(stack);
  st.appendChild(wrap);
  if (mode === "blink") {
    var on = true;
    blinkTimer = setInterval(function () { on = !on; b.style.visibility = on ? "visible" : "hidden"; }, 600);
  }
}
function open() {
  if (cur < 0 || cur >= rows.length) return;
  var pg = Math.floor(cur / PAGE);
  if (pg !== page) page = pg;
  draw();
  $("viewer").hidden = false;
  show();
}
function close() { stopBlink(); $("viewer").hidden = true; draw(); }
function move(step) {
  if (!rows.length) return;
  cur = Math.max(0, Math.min(rows.length - 1, cur + step));
  page = Math.floor(cur / PAGE);
  if ($("viewer").hidden) { draw(); var s = document.querySelector("tr.sel"); if (s && s.scrollIntoView) s.scrollIntoView({block: "nearest"}); }
  else { draw(); show(); }
}
function setMode(m) { mode = m; if (!$("viewer").hidden) show(); }
$("v-side").addEventListener("click", function () { setMode("side"); });
$("v-diff").addEventListener("click", function () { setMode("diff"); });
$("v-blink").addEventListener("click", function () { setMode("blink"); });
$("v-fit").addEventListener("click", function () { fit = !fit; show(); });
$("v-close").addEventListener("click", close);
$("v-prev").addEventListener("click", function () { move(-1); });
$("v-next").addEventListener("click", function () { move(1); });
document.addEventListener("keydown", function (ev) {
  var t = ev.target, tag = t && t.tagName;
  if (ev.ctrlKey || ev.metaKey || ev.altKey || tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
  var k = ev.key, viewing = !$("viewer").hidden, used = true;
  if (k === "j" || k === "ArrowDown" || (viewing && k === "ArrowRight")) move(1);
  else if (k === "k" || k === "ArrowUp" || (viewing && k === "ArrowLeft")) move(-1);
  else if (k === "Enter" && !viewing) open();
  else if (k === "Escape" && viewing) close();
  else if ((k === "1" || k === "2" || k === "3") && cur >= 0 && cur < rows.length) {
    decide(rows[cur], KEYS[+k - 1]);
    if (cur < rows.length - 1) move(1); else refresh();
  } else if (viewing && k === "d") setMode("diff");
  else if (viewing && k === "b") setMode("blink");
  else if (viewing && k === "s") setMode("side");
  else if (viewing && k === "f") { fit = !fit; show(); }
  else used = false;
  if (used) ev.preventDefault();
});
// -- export ----------------------------------------------------------------------------------------------------------
function download(text, file, type) {
  var url = URL.createObjectURL(new Blob([text], {type: type})), a = el("a");
  a.href = url; a.download = file; a.style.display = "none";
  document.body.appendChild(a); a.click(); document.body.removeChild(a);
  setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
}
function baseline() {
  // Accepted: pairs decided "not a copy" or "accept", and what the report's baseline already accepted unless the
  // curator now calls it the same shot. "Same shot" pairs stay out, so they keep failing until fixed.
  var entries = {};
  D.accepted.forEach(function (a) {
    if (dec[a[0]] !== "same") entries[a[0]] = {id: a[0], check: a[1], severity: a[2], images: a[3], message: a[4]};
  });
  P.forEach(function (p) {
    var d = dec[p[8]];
    if (d === "notcopy" || d === "accept" || (p[7] && d !== "same")) {
      entries[p[8]] = {id: p[8], check: p[0], severity: p[2], images: [name(p[3]), name(p[4])], message: p[9]};
      if (d) entries[p[8]].decision = DECISIONS[d];
    }
  });
  var ids = Object.keys(entries).sort();
  return JSON.stringify({version: 1, generated_by: "splitaudit html report", accepted: ids.map(function (i) { return entries[i]; })}, null, 2) + "\n";
}
function cell(v) {
  var s = v === null || v === undefined ? "" : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = "'" + s;  // a spreadsheet must not read a file name as a formula
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}
function csv() {
  var out = [["id", "decision", "check", "category", "severity", "accepted", "split_a", "path_a", "label_a", "split_b",
              "path_b", "label_b", "evidence", "message"].join(",")];
  P.forEach(function (p) {
    var a = I[p[3]], b = I[p[4]];
    out.push([p[8], DECISIONS[dec[p[8]]] || "", p[0], p[1], p[2], p[7], S[a[0]], a[1], a[2], S[b[0]], b[1], b[2], p[5], p[9]].map(cell).join(","));
  });
  return out.join("\n") + "\n";
}
$("x-baseline").addEventListener("click", function () { download(baseline(), "splitaudit-baseline.json", "application/json"); });
$("x-csv").addEventListener("click", function () { download(csv(), "splitaudit-decisions.csv", "text/csv"); });
$("x-clear").addEventListener("click", function () { dec = {}; save(); apply(); });
// The view lives in the URL fragment (#pairs?check=...&class=...&sort=closest&page=2): links to a filtered view
// can be shared, and fragment changes never leave the page.
var FIELDS = {check: "f-check", category: "f-category", splits: "f-pair", "class": "f-class", status: "f-status", sort: "f-sort",
              q: "f-search", decision: "f-decision"};
function readHash() {
  var h = location.hash, i = h.indexOf("?"), out = {};
  if (h.slice(0, 6) !== "#pairs" || i < 0) return out;
  h.slice(i + 1).split("&").forEach(function (kv) {
    var j = kv.indexOf("=");
    if (j <= 0) return;
    try { out[decodeURIComponent(kv.slice(0, j))] = decodeURIComponent(kv.slice(j + 1).replace(/\+/g, " ")); } catch (e) { /* malformed: ignore */ }
  });
  return out;
}
function writeHash() {
  var parts = [];
  Object.keys(FIELDS).forEach(function (k) { var v = $(FIELDS[k]).value; if (v) parts.push(k + "=" + encodeURIComponent(v)); });
  if (page > 0) parts.push("page=" + (page + 1));
  try { history.replaceState(null, "", "#pairs" + (parts.length ? "?" + parts.join("&") : "")); } catch (e) { /* file: URLs may refuse */ }
}
Object.keys(FIELDS).forEach(function (k) {
  var el_ = $(FIELDS[k]);
  el_.addEventListener(k === "q" ? "input" : "change", function () { apply(); writeHash(); });
});
$("prev").addEventListener("click", function () { page -= 1; cur = page * PAGE; draw(); writeHash(); });
$("next").addEventListener("click", function () { page += 1; cur = page * PAGE; draw(); writeHash(); });
var init = readHash();
Object.keys(FIELDS).forEach(function (k) { if (init[k] !== undefined) $(FIELDS[k]).value = init[k]; });
apply();
if (init.page) { page = Math.max(0, (parseInt(init.page, 10) || 1) - 1); cur = Math.min(rows.length - 1, page * PAGE); draw(); }
document.body.setAttribute("data-ready", "1");
})();"""
