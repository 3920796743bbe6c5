"""The self-contained HTML page: plotly.js embedded once, each figure a JSON blob rendered by one
loader script, sortable tables in plain JS, downloads as data: URIs (or sidecar files when large).
No CDN, no network.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field

import pandas as pd

from . import figures as F
from . import tables as T
from .data import StudyData
from .metrics import metric_view


@dataclass
class Download:
    label: str
    filename: str
    href: str  # data: URI or a relative path to a sidecar file
    size: int
    embedded: bool


@dataclass
class Section:
    key: str
    title: str
    blocks: list = field(default_factory=list)  # Figure | Note | str (trusted HTML)


def esc(value) -> str:
    return html.escape("" if value is None else str(value))


def _fig_json(fig) -> str:
    import plotly.io as pio

    text = pio.to_json(fig, validate=False)
    return text.replace("<", "\\u003c")  # nothing inside can close the <script>


# -------------------------------------------------------------------------------- header
def _duration(seconds) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "unknown"
    seconds = int(round(float(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def _wall_time(sd: StudyData) -> str:
    wall = sd.user_attrs.get("wall_time_s")
    if isinstance(wall, (int, float)):
        return _duration(wall)
    df = sd.trials
    if df.empty or df["datetime_start"].isna().all():
        return "unknown"
    start = pd.to_datetime(df["datetime_start"]).min()
    end = pd.to_datetime(df["datetime_complete"]).max()
    if pd.isna(end):
        return "unknown"
    return _duration((end - start).total_seconds()) + " (first trial start to last trial end)"


def _kv(label: str, value_html: str) -> str:
    return f'<div class="kv"><div class="k">{esc(label)}</div><div class="v">{value_html}</div></div>'


def header_html(sd: StudyData, downloads: list[Download]) -> str:
    ua = sd.user_attrs
    objectives = " · ".join(
        f"{esc(o.name)} {'↑' if o.direction == 'maximize' else '↓'}" for o in sd.objectives) or "none"
    size = ua.get("space_size")
    size_text = f"{int(size):,} configurations" if isinstance(size, (int, float)) else "not enumerable"
    budgets = T.budgets_text(sd)
    evaluator = ua.get("evaluator")
    if isinstance(evaluator, dict):
        evaluator = " · ".join(f"{k}: {v}" for k, v in evaluator.items())
    seed = ua.get("seed")
    sampler = esc(ua.get("sampler", "unknown")) + (f" (seed {esc(seed)})" if seed is not None else "")
    counts = T.state_counts(sd)
    chips = []
    for state, n, parts in counts:
        detail = ", ".join(f"{esc(w)} {c}" for w, c in parts)
        chips.append(f'<span class="chip s-{state.lower()}"><b>{state}</b> {n}'
                     + (f' <span class="sub">({detail})</span>' if detail else "") + "</span>")
    total = len(sd.trials)
    rows = [
        _kv("objectives", objectives),
        _kv("budgets", esc(" · ".join(budgets)) if budgets else "none"),
        _kv("space size", esc(size_text)),
        _kv("sampler", sampler),
        _kv("device", esc(ua.get("device", "unknown"))),
        _kv("evaluator", esc(evaluator or "unknown")),
        _kv("data set", esc(sd.dataset or "not recorded")),
        *([_kv("halving", esc(halving))] if (halving := _halving_text(sd)) else []),
        _kv("started", esc(ua.get("started_at", "unknown"))),
        _kv("wall time", esc(_wall_time(sd))),
        _kv(f"trials ({total})", " ".join(chips) if chips else "none"),
        _kv("storage", f"<code>{esc(sd.storage_label)}</code>"),
    ]
    if ua.get("overlock_nas_version"):
        rows.append(_kv("overlock-nas", esc(ua["overlock_nas_version"])))
    dl = " · ".join(
        f'<a class="dl" download="{esc(d.filename)}" href="{esc(d.href)}">{esc(d.label)}</a> '
        f'<span class="muted">({d.size / 1024:,.0f} KiB, {"embedded" if d.embedded else "file next to this page"})</span>'
        for d in downloads)
    if dl:
        rows.append(_kv("all trials", dl))
    out = ['<div class="grid">' + "".join(rows) + "</div>"]
    study_file = ua.get("study_file")
    if study_file:
        out.append(f'<details><summary>study file (as run)</summary><pre class="yaml">{esc(study_file)}</pre>'
                   "</details>")
    elif ua.get("space"):
        out.append(f'<details><summary>search space</summary><pre>{esc(json.dumps(ua["space"], indent=2))}'
                   "</pre></details>")
    return "\n".join(out)


def _halving_text(sd: StudyData) -> str | None:
    """How well rung scores - and rung validation losses, where the evaluator kept them - agreed
    with final scores (reports.fidelity); None without rungs."""
    from .fidelity import agreement_text, rung_agreement

    lines = [agreement_text(rung_agreement(sd.trials, signal), signal) for signal in ("accuracy", "val_loss")]
    return "; ".join(line for line in lines if line) or None


def banners(sd: StudyData) -> list[str]:
    df = sd.trials
    out = []
    if df.empty:
        out.append('<div class="banner info"><b>This study has no trials yet.</b> Nothing to plot; '
                   "build the report again once the search has run.</div>")
        return out
    running = df[df["state"] == "RUNNING"]
    if len(running):
        nums = ", ".join(str(n) for n in running["number"].head(20))
        out.append(f'<div class="banner info"><b>Study in progress:</b> {len(running)} trial(s) running '
                   f"({esc(nums)}{'…' if len(running) > 20 else ''}). This page is a snapshot taken "
                   f"{sd.loaded_at:%Y-%m-%d %H:%M:%S}; build it again for newer results.</div>")
    if not _has_results(sd):
        failed = int((df["state"] == "FAIL").sum())
        if failed == len(df):
            out.append(f'<div class="banner bad"><b>All {failed} trials failed.</b> There are no results to '
                       "plot. The reasons they failed are listed under “Failures and pruning” below.</div>")
        else:
            out.append('<div class="banner bad"><b>No trial has finished with results yet.</b> Nothing to '
                       "plot; see the trial counts above and “Failures and pruning” below.</div>")
    return out


def _has_results(sd: StudyData) -> bool:
    df = sd.trials
    names = [o.name for o in sd.objectives if o.name in df.columns]
    ok = df["category"].isin(["feasible", "infeasible", "preset", "partial"])
    return bool(names) and bool((ok & df[names].notna().any(axis=1)).any())


# -------------------------------------------------------------------------------- tables
_NUMERIC_FMT = {"fidelity": ".2g", "trial": "d"}


def table_html(sd: StudyData, table: pd.DataFrame, table_id: str, caption: str = "") -> str:
    """A sortable table; metric columns shown in display units with the raw value in data-v."""
    if table.empty:
        return f'<p class="muted">{esc(caption or "No rows.")}</p>'
    views = {c: metric_view(c, sd.resolution, sd.latency_setting, sd.dataset, sd.accuracy_from) for c in table.columns}
    metric_cols = {"accuracy", "flops", "flops_paper", "params", "latency_ms", "memory_mb", "synflow",
                   "naswot", "zico"} | {o.name for o in sd.objectives}
    head = []
    for c in table.columns:
        label = views[c].short if c in metric_cols else c
        title = views[c].label if c in metric_cols else c
        numeric = c in metric_cols or c in _NUMERIC_FMT
        head.append(f'<th data-num="{int(numeric)}" title="{esc(title)}">{esc(label)}<span class="arrow"></span></th>')
    merged = "architecture" in table.columns and "params (Optuna)" in table.columns
    if merged:  # the Optuna params go under the architecture, in the same cell
        head = [h for h, c in zip(head, table.columns) if c != "params (Optuna)"]
    body = []
    for rec in table.to_dict("records"):
        cells = []
        for c in table.columns:
            v = rec[c]
            if merged and c == "params (Optuna)":
                continue
            missing = v is None or (isinstance(v, float) and math.isnan(v))
            if c == "export":
                cells.append(f'<td class="cmd"><code>{esc(v)}</code><button class="copy" type="button" '
                             f'title="copy">copy</button></td>')
            elif c in metric_cols:
                cells.append(f'<td class="num" data-v="{"" if missing else float(v)!r}">'
                             f'{"" if missing else esc(views[c].show(v))}</td>')
            elif c in _NUMERIC_FMT:
                shown = "" if missing else format(v, _NUMERIC_FMT[c])
                cells.append(f'<td class="num" data-v="{"" if missing else v}">{esc(shown)}</td>')
            elif c == "architecture":
                extra = (f'<div class="params">{esc(rec["params (Optuna)"])}</div>'
                         if merged and rec.get("params (Optuna)") else "")
                cells.append(f'<td class="arch">{esc(v) if not missing else ""}{extra}</td>')
            else:
                cells.append(f"<td>{esc(v) if not missing else ''}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<div class="table-wrap"><table class="sortable" id="{esc(table_id)}">{cap}<thead><tr>'
            + "".join(head) + "</tr></thead><tbody>" + "".join(body) + "</tbody></table></div>")


def _picks_caption(sd: StudyData) -> str:
    """What the `pick` column means: the trials `export --top K` / `--knee` would choose."""
    from nas.selection import KNEE_METHOD

    from .data import TOP_K

    df = sd.trials
    if "pick" not in df.columns or not (df["pick"] != "").any():
        return ""
    key = sd.score_metric or (sd.objectives[0].name if sd.objectives else "the objective")
    knee = ("; <b>knee</b>: the knee of the feasible Pareto front, what <code>overlock-nas export "
            f"--knee</code> exports ({esc(KNEE_METHOD)})" if (df["pick"].str.contains("knee")).any() else "")
    return (f'<p class="caption">Column <b>pick</b>: <b>best</b>, <b>top 2</b> .. <b>top {TOP_K}</b>: the '
            f"feasible full-fidelity trials best by {esc(key)}, what <code>overlock-nas export --top {TOP_K}"
            f"</code> exports (rows off the front are added to this table){knee}.</p>")


# -------------------------------------------------------------------------------- sections
def build_sections(sd: StudyData) -> list[Section]:
    sections: list[Section] = []
    df = sd.trials
    if _has_results(sd):
        hover = F.hover_texts(sd)
        front = Section("fronts", "Pareto fronts" if len(sd.objectives) > 1 else "Trade-offs")
        for x, y in F.pareto_pairs(sd):
            front.blocks.append(F.pareto_figure(sd, x, y, hover))
        fig3 = F.pareto_3d(sd, hover)
        if fig3 is not None:
            front.blocks.append(fig3)
        if not front.blocks:
            front.blocks.append(F.Note("fronts-none", "", "No objective pair to plot."))
        sections.append(front)

        rows = T.pareto_rows(sd)
        single = len(sd.objectives) < 2
        table = Section("front-table", "Best feasible trials" if single else "Pareto-optimal trials")
        on_front = int(rows["pareto"].sum()) if "pareto" in rows.columns else len(rows)
        words = ("the top 10 feasible trials by the objective" if single else
                 f"the {on_front} feasible Pareto-optimal trials (COMPLETE, full fidelity, all budgets met; "
                 "presets excluded)" + (f", then {len(rows) - on_front} off the front that an export "
                                        "picks" if len(rows) > on_front else ""))
        units = "; ".join(f"{esc(v.short)}: {esc(v.label)}" for v in
                          (metric_view(m, sd.resolution, sd.latency_setting, sd.dataset,
                                       sd.accuracy_from) for m in
                           ("accuracy", "flops", "flops_paper", "params", "latency_ms", "memory_mb"))
                          if v.name in df.columns and df[v.name].notna().any())
        table.blocks.append(f'<p class="caption">Click a column header to sort. Rows: {words}. Each row ends '
                            "with the command that exports that trial as a model directory.</p>"
                            f'<p class="caption">Units: {units}.</p>' + _picks_caption(sd))
        table.blocks.append(table_html(sd, T.trial_table(sd, rows), "pareto-table",
                                       "" if len(rows) else "No feasible complete trial yet."))
        presets = T.preset_rows(sd)
        if len(presets):
            table.blocks.append('<h3>Official presets, evaluated in the same setting</h3>')
            table.blocks.append(table_html(sd, T.trial_table(sd, presets, with_export=False), "preset-table"))
        sections.append(table)

        hv = F.hypervolume_figure(sd)
        sections.append(Section("hypervolume", hv.title, [hv]))
        sections.append(Section("edf", "Design-space EDFs", [F.edf_figure(sd)]))
        sections.append(Section("parallel", "Parallel coordinates", [F.parallel_figure(sd)]))
        sections.append(Section("importance", "Parameter importances", [F.importance_figure(sd)]))
        stages = F.latency_stages_figure(sd)
        if stages is not None:
            sections.append(Section("latency-stages", "Latency per stage", [stages]))
        predicted = F.latency_model_figure(sd)
        if predicted is not None:
            sections.append(Section("latency-model", predicted.title, [predicted]))
    if not df.empty and df["state"].isin(["FAIL", "PRUNED"]).any():
        fails = T.failure_table(sd)
        fail = Section("failures", "Failures and pruning")
        fail.blocks.append(table_html(sd, fails, "failure-table"))
        failed = df[df["state"] == "FAIL"]
        if len(failed) and "error" in failed.columns:
            last = failed.dropna(subset=["error"]).tail(3)
            for r in last.to_dict("records"):
                fail.blocks.append(f'<details><summary>trial {r["number"]}: {esc(r.get("reason", ""))}</summary>'
                                   f'<pre>{esc(r["error"])}</pre></details>')
        sections.append(fail)
    return sections


# -------------------------------------------------------------------------------- page
_CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 Inter,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;background:#f5f6f8}
header.top{background:#1f2a37;color:#fff;padding:18px 28px 14px}
header.top h1{margin:0;font-size:22px;font-weight:600}
header.top .sub{color:#c9d2dc;font-size:13px;margin-top:4px}
nav{position:sticky;top:0;z-index:10;background:#fff;border-bottom:1px solid #dde1e6;padding:8px 28px;
  display:flex;flex-wrap:wrap;gap:6px 18px;font-size:14px}
nav a{color:#2c5d9c;text-decoration:none}nav a:hover{text-decoration:underline}
main{max-width:1500px;margin:0 auto;padding:18px 28px 60px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:16px 20px;margin:0 0 20px}
section h2{margin:0 0 10px;font-size:19px;font-weight:600}
section h3{margin:18px 0 8px;font-size:16px;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:6px 28px}
.kv{display:flex;gap:12px;padding:4px 0;border-bottom:1px dotted #e5e7ea}
.kv .k{flex:0 0 120px;color:#667;font-size:13px;padding-top:1px}.kv .v{flex:1;min-width:0;word-break:break-word}
.chip{display:inline-block;border-radius:12px;padding:1px 10px;margin:2px 4px 2px 0;background:#eef1f5;font-size:13px}
.chip .sub{color:#556}.s-complete{background:#e3eefb}.s-pruned{background:#f1e8f3}.s-fail{background:#fbe6e6}
.s-running{background:#e4f4e2}
.banner{border-radius:8px;padding:12px 16px;margin:0 0 16px;font-size:15px}
.banner.info{background:#e8f1fb;border:1px solid #b6d0ef}.banner.bad{background:#fdecea;border:1px solid #f3b7b0}
#report-errors{background:#fdecea;border:1px solid #e0665a;border-radius:8px;padding:8px 16px;margin:0 0 16px}
.figure{margin:6px 0 22px}.figure h3{margin:4px 0 0}
.plot{width:100%}
.caption{color:#555;font-size:13px;margin:4px 0 0;max-width:1200px}
.note{color:#555;background:#f7f7f9;border-left:4px solid #c4c9d0;padding:8px 12px;margin:8px 0}
.muted{color:#778;font-size:13px}
details{margin:10px 0}summary{cursor:pointer;color:#2c5d9c}
pre{background:#f6f8fa;border:1px solid #e1e4e8;border-radius:6px;padding:10px 12px;overflow:auto;
  font-size:12.5px;max-height:420px}
code{font-family:"JetBrains Mono",Menlo,Consolas,monospace;font-size:12.5px}
.table-wrap{overflow-x:auto}
table.sortable{border-collapse:collapse;width:100%;font-size:13px}
table.sortable th{position:sticky;top:0;background:#f0f2f5;text-align:left;padding:6px 8px;cursor:pointer;
  white-space:nowrap;border-bottom:2px solid #d5d9de;user-select:none}
table.sortable td{padding:5px 8px;border-bottom:1px solid #eceef1;vertical-align:top}
table.sortable tr:hover td{background:#fafbfd}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.arch{min-width:380px;font-size:12.5px}td.arch .params{color:#6a7380;font-size:11.5px;margin-top:2px}
td.cmd{min-width:260px}td.cmd code{background:#f3f4f6;padding:2px 5px;border-radius:4px;user-select:all;
  word-break:break-all}
button.copy{margin-left:6px;font-size:11px;padding:1px 6px;border:1px solid #c9ced6;border-radius:4px;
  background:#fff;cursor:pointer}
th .arrow{color:#999;margin-left:4px;font-size:11px}
a.dl{font-weight:600;color:#2c5d9c}
footer{color:#889;font-size:12px;text-align:center;padding:10px}
"""

_JS_HOOKS = """
window.__reportErrors = [];
function reportError(msg) {
  window.__reportErrors.push(String(msg));
  var box = document.getElementById('report-errors');
  if (box) { box.hidden = false; var li = document.createElement('li'); li.textContent = String(msg);
             box.querySelector('ul').appendChild(li); }
}
window.addEventListener('error', function (e) { reportError('error: ' + e.message); });
window.addEventListener('unhandledrejection', function (e) { reportError('unhandled: ' + e.reason); });
(function () { var ce = console.error; console.error = function () {
  reportError('console.error: ' + Array.prototype.join.call(arguments, ' ')); ce.apply(console, arguments); }; })();
"""

_JS_MAIN = """
(function () {
  var plots = Array.prototype.slice.call(document.querySelectorAll('div.plot[data-fig]'));
  if (plots.length && typeof Plotly === 'undefined') { reportError('plotly.js is missing'); plots = []; }
  document.body.setAttribute('data-plots-total', plots.length);
  document.body.setAttribute('data-plots-rendered', 0);
  var done = 0;
  function finish() { done += 1; document.body.setAttribute('data-plots-rendered', done); }
  plots.forEach(function (div) {
    try {
      var spec = JSON.parse(document.getElementById(div.getAttribute('data-fig')).textContent);
      Plotly.newPlot(div, spec.data, spec.layout || {},
                     {responsive: true, displaylogo: false, toImageButtonOptions: {format: 'png', scale: 2}})
        .then(function () { div.setAttribute('data-rendered', '1'); finish(); })
        .catch(function (err) { reportError('plot ' + div.id + ': ' + err); });
    } catch (err) { reportError('plot ' + div.id + ': ' + err); }
  });
  // sortable tables
  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('th').forEach(function (th, col) {
      th.addEventListener('click', function () {
        var numeric = th.getAttribute('data-num') === '1';
        var dir = th.getAttribute('data-dir') === 'asc' ? 'desc' : 'asc';
        table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-dir');
          h.querySelector('.arrow').textContent = ''; });
        th.setAttribute('data-dir', dir); th.querySelector('.arrow').textContent = dir === 'asc' ? '▲' : '▼';
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[col], y = b.cells[col], r;
          if (numeric) {
            var u = x.getAttribute('data-v'), v = y.getAttribute('data-v');
            u = u === '' || u === null ? NaN : parseFloat(u); v = v === '' || v === null ? NaN : parseFloat(v);
            if (isNaN(u) && isNaN(v)) return 0; if (isNaN(u)) return 1; if (isNaN(v)) return -1;
            r = u - v;
          } else { r = x.textContent.localeCompare(y.textContent, undefined, {numeric: true}); }
          return dir === 'asc' ? r : -r;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
  document.querySelectorAll('button.copy').forEach(function (b) {
    b.addEventListener('click', function () {
      var text = b.parentNode.querySelector('code').textContent;
      function ok() { b.textContent = 'copied'; setTimeout(function () { b.textContent = 'copy'; }, 1200); }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(ok, function () {});
      } else {
        var r = document.createRange(); r.selectNodeContents(b.parentNode.querySelector('code'));
        var s = window.getSelection(); s.removeAllRanges(); s.addRange(r);
        try { document.execCommand('copy'); ok(); } catch (e) {}
      }
    });
  });
})();
"""


def render(sd: StudyData, sections: list[Section], downloads: list[Download], plotly_js: str) -> str:
    """The whole page as one string."""
    parts: list[str] = []
    blobs: list[str] = []
    nav = ['<a href="#study">Study</a>'] + [f'<a href="#{esc(s.key)}">{esc(s.title)}</a>' for s in sections]
    body = [f'<section id="study"><h2>Study</h2>{header_html(sd, downloads)}</section>']
    for s in sections:
        html_blocks = []
        for b in s.blocks:
            if isinstance(b, F.Figure):
                fid = f"fig-{b.key}"
                blobs.append(f'<script type="application/json" id="{fid}-data">{_fig_json(b.figure)}</script>')
                title = f"<h3>{esc(b.title)}</h3>" if len(s.blocks) > 1 or b.title != s.title else ""
                html_blocks.append(
                    f'<div class="figure">{title}<div class="plot" id="{fid}" data-fig="{fid}-data" '
                    f'style="height:{b.height}px"></div><p class="caption">{esc(b.caption)}</p></div>')
            elif isinstance(b, F.Note):
                html_blocks.append(f'<div class="note">{esc(b.text)}</div>')
            else:
                html_blocks.append(str(b))
        body.append(f'<section id="{esc(s.key)}"><h2>{esc(s.title)}</h2>{"".join(html_blocks)}</section>')
    title = f"{sd.study_name} · overlock-nas report"
    when = sd.loaded_at.strftime("%Y-%m-%d %H:%M:%S")
    # plotly.js once per file, and only when there is something to draw
    library = f'<script type="text/javascript">{plotly_js}</script>' if blobs else ""
    parts.append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                 f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
                 '<link rel="icon" href="data:,">'
                 f"<style>{_CSS}</style><script>{_JS_HOOKS}</script>{library}</head><body>")
    parts.append(f'<header class="top"><h1>OverLoCK NAS · study <code>{esc(sd.study_name)}</code></h1>'
                 f'<div class="sub">{len(sd.trials)} trials · report built {when} from '
                 f"{esc(sd.storage_label)}</div></header>")
    parts.append("<nav>" + "".join(nav) + "</nav><main>")
    parts.append('<div id="report-errors" hidden><b>Problems while drawing this page:</b><ul></ul></div>')
    parts.extend(banners(sd))
    parts.extend(body)
    parts.append(f"</main><footer>overlock-nas report · {esc(when)} · self-contained, works offline"
                 "</footer>")
    parts.extend(blobs)
    parts.append(f"<script>{_JS_MAIN}</script></body></html>")
    return "\n".join(parts)


def data_uri(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(payload).decode("ascii")

