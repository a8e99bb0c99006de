"""The run report's web page: one static HTML file with inline CSS, an SVG stage graph and a small script.

`render_page(run, plots, samples)` returns the page. Every value from the run is escaped (`html.escape`, and the
samples travel as JSON in a `<script type="application/json">` rendered with `textContent`), so a completion that
contains markup shows as text. The script fills the sample browser (filter by stage, kind, verdict and text) and,
once every figure has loaded, sets `data-images-ok` on the body, which the browser test reads.
"""

from __future__ import annotations

import html
import json
from typing import Any

from posttrain.runs import RunInfo, StageInfo, chain_table, fmt

STATUS_COLORS = {"done": "#2e7d32", "resumed": "#1565c0", "unfinished": "#ef6c00"}
BOX_W, BOX_H, GAP_X, GAP_Y = 180, 58, 60, 18

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border: 1px solid #ddd; padding: 4px 8px; }
th { background: #f5f5f5; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #2e7d32; } .down { color: #c62828; }
figure { display: inline-block; margin: 8px; vertical-align: top; } img { max-width: 560px; border: 1px solid #eee; }
#filters select, #filters input { margin-right: 8px; }
.sample { border: 1px solid #ddd; border-radius: 4px; margin: 6px 0; padding: 6px 10px; }
.sample pre { white-space: pre-wrap; margin: 4px 0; max-height: 240px; overflow: auto; background: #fafafa; }
.tag { display: inline-block; padding: 0 6px; margin-right: 6px; border-radius: 3px; background: #eee; }
.tag.rejected { background: #ffcdd2; } .tag.kept { background: #c8e6c9; }
"""

SCRIPT = """
const samples = JSON.parse(document.getElementById('samples').textContent);
const box = document.getElementById('sample-list');
const pick = (id) => document.getElementById(id);
function options(id, values) {
  const select = pick(id);
  for (const v of [...new Set(values)].sort()) {
    const o = document.createElement('option'); o.value = v; o.textContent = v; select.appendChild(o);
  }
}
options('f-stage', samples.map(s => s.stage));
options('f-kind', samples.map(s => s.kind));
options('f-verdict', samples.map(s => String(s.verdict ?? '')));
function render() {
  const stage = pick('f-stage').value, kind = pick('f-kind').value, verdict = pick('f-verdict').value;
  const text = pick('f-text').value.toLowerCase();
  const shown = samples.filter(s => (!stage || s.stage === stage) && (!kind || s.kind === kind)
    && (!verdict || String(s.verdict ?? '') === verdict)
    && (!text || (s.text + ' ' + (s.prompt ?? '')).toLowerCase().includes(text)));
  box.replaceChildren();
  pick('f-count').textContent = shown.length + ' of ' + samples.length;
  for (const s of shown.slice(0, 300)) {
    const div = document.createElement('div'); div.className = 'sample';
    const head = document.createElement('div');
    for (const [cls, label] of [['', s.stage], [s.kind, s.kind], ['', s.verdict], ['', s.step != null ? 'step ' + s.step : null],
                                ['', s.reward != null ? 'reward ' + Number(s.reward).toFixed(3) : null],
                                ['', s.answer != null ? 'gold ' + s.answer : null]]) {
      if (label == null || label === '') continue;
      const tag = document.createElement('span'); tag.className = 'tag ' + cls; tag.textContent = label; head.appendChild(tag);
    }
    if (s.rewards && typeof s.rewards === 'object') {
      const tag = document.createElement('span'); tag.className = 'tag';
      tag.textContent = Object.entries(s.rewards).map(([k, v]) => k + '=' + (v == null ? 'None' : Number(v).toFixed(3))).join(' ');
      head.appendChild(tag);
    }
    div.appendChild(head);
    if (s.prompt) { const p = document.createElement('pre'); p.textContent = s.prompt; p.style.color = '#555'; div.appendChild(p); }
    const pre = document.createElement('pre'); pre.textContent = s.text; div.appendChild(pre);
    box.appendChild(div);
  }
}
for (const id of ['f-stage', 'f-kind', 'f-verdict', 'f-text']) pick(id).addEventListener('input', render);
render();
const images = [...document.images];
Promise.all(images.map(img => img.complete ? Promise.resolve() : new Promise(r => { img.onload = r; img.onerror = r; })))
  .then(() => { document.body.dataset.imagesOk = String(images.every(img => img.naturalWidth > 0)); });
"""


def _e(value: Any) -> str:
    return html.escape(fmt(value) if not isinstance(value, str) else value)


def _layers(run: RunInfo) -> dict[str, int]:
    layer: dict[str, int] = {}
    for stage in run.stages:  # dependencies come first in run.stages
        layer[stage.name] = 1 + max((layer.get(d, -1) for d in stage.deps), default=-1)
    return layer


def stage_graph(run: RunInfo) -> str:
    """An SVG of the stages as boxes in dependency layers, left to right, with arrows from inputs to users."""
    layer = _layers(run)
    rows: dict[int, int] = {}
    pos = {}
    for stage in run.stages:
        col = layer[stage.name]
        pos[stage.name] = (col * (BOX_W + GAP_X) + 10, rows.get(col, 0) * (BOX_H + GAP_Y) + 10)
        rows[col] = rows.get(col, 0) + 1
    width = (max(layer.values(), default=0) + 1) * (BOX_W + GAP_X)
    height = max(rows.values(), default=1) * (BOX_H + GAP_Y) + 20
    parts = [f'<svg id="graph" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#888"/></marker></defs>']  # fmt: skip
    for stage in run.stages:
        x, y = pos[stage.name]
        for dep in stage.deps:
            if dep in pos:
                dx, dy = pos[dep]
                parts.append(f'<line x1="{dx + BOX_W}" y1="{dy + BOX_H / 2}" x2="{x}" y2="{y + BOX_H / 2}" '
                             'stroke="#888" marker-end="url(#arrow)"/>')  # fmt: skip
    for stage in run.stages:
        x, y = pos[stage.name]
        color = STATUS_COLORS.get(stage.status, "#666")
        time = f"{stage.wall_time_s:.0f} s" if stage.wall_time_s is not None else ""
        parts.append(
            f'<g class="stage"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="white" '
            f'stroke="{color}" stroke-width="2"/><text x="{x + 8}" y="{y + 20}" font-weight="bold">{_e(stage.name)}'
            f'</text><text x="{x + 8}" y="{y + 38}" font-size="12">{_e(stage.type)}</text><text x="{x + 8}" '
            f'y="{y + 52}" font-size="12" fill="{color}">{_e(stage.status)} {time}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _stage_table(run: RunInfo) -> str:
    rows = "".join(
        f"<tr><td>{_e(s.name)}</td><td>{_e(s.type)}</td><td style='color:{STATUS_COLORS.get(s.status, '#666')}'>"
        f"{_e(s.status)}</td><td class='num'>{_e(s.wall_time_s) if s.manifest else ''}</td><td>{_e(s.headline())}"
        "</td></tr>"
        for s in run.stages
    )
    return f"<table id='stages'><tr><th>stage</th><th>type</th><th>status</th><th>wall time (s)</th><th>result</th></tr>{rows}</table>"


def _direction(before: Any, after: Any, key: str) -> str:
    if not all(isinstance(v, (int, float)) for v in (before, after)) or before == after:
        return ""
    lower_is_better = any(w in key for w in ("loss", "truncated", "repetition", "mean_tokens"))
    better = (after < before) if lower_is_better else (after > before)
    return "up" if better else "down"


def _eval_table(stages: list[StageInfo]) -> str:
    rows = []
    for s in stages:
        for key, before, after in s.evals():
            cls = _direction(before, after, key)
            rows.append(f"<tr><td>{_e(s.name)}</td><td>{_e(key)}</td><td class='num'>{_e(before)}</td>"
                        f"<td class='num {cls}'>{_e(after)}</td></tr>")  # fmt: skip
        if s.type == "eval":
            keys = [k for k in s.metrics if k.startswith(("pass@", "reward/")) or k in ("mean_tokens", "repetition")]
            rows += [f"<tr><td>{_e(s.name)}</td><td>{_e(k)}</td><td></td><td class='num'>{_e(s.metrics[k])}</td></tr>"
                     for k in keys]  # fmt: skip
    if not rows:
        return "<p>No stage recorded an eval.</p>"
    return (
        "<table id='evals'><tr><th>stage</th><th>metric</th><th>before</th><th>after</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _chain_table(run: RunInfo) -> str:
    points, columns, cells = chain_table(run)
    if not points:
        return ""
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = ""
    for point in points:
        row = ""
        for column in columns:
            value, stderr = cells.get((point, column), (None, None))
            noise = f" <small>± {2 * stderr:.2g}</small>" if isinstance(stderr, (int, float)) else ""
            row += f"<td class='num'>{_e(value) if value is not None else ''}{noise}</td>"
        body += f"<tr><td>{_e(point)}</td>{row}</tr>"
    return (
        "<h2>The chain, eval by eval</h2><p>± is twice the standard error over prompts (the eval's own noise).</p>"
        f"<table id='chain'><tr><th>point</th>{head}</tr>{body}</table>"
    )


def render_page(run: RunInfo, plots: dict[str, list[str]], samples: list[dict[str, Any]]) -> str:
    figures = "".join(
        f"<h3>{_e(name)}</h3>"
        + "".join(f"<figure><img src='{html.escape(f)}' alt='{html.escape(f)}'></figure>" for f in files)
        for name, files in plots.items()
        if files
    )
    data = json.dumps(samples, default=str).replace("</", "<\\/")  # no early end of the script element
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>posttrain report: {_e(run.folder.name)}</title>
<style>{CSS}</style></head>
<body>
<h1>posttrain report: {_e(run.folder.name)}</h1>
<p>{len(run.stages)} stages in <code>{_e(str(run.folder))}</code>.</p>
<h2>Stages</h2>
{stage_graph(run)}
{_stage_table(run)}
{_chain_table(run)}
<h2>Evals</h2>
{_eval_table(run.stages)}
<h2>Plots</h2>
{figures or "<p>No stage logged per-step metrics.</p>"}
<h2>Samples</h2>
<div id="filters"><select id="f-stage"><option value="">every stage</option></select>
<select id="f-kind"><option value="">every kind</option></select>
<select id="f-verdict"><option value="">every verdict</option></select>
<input id="f-text" placeholder="search text"> <span id="f-count"></span></div>
<div id="sample-list"></div>
<script type="application/json" id="samples">{data}</script>
<script>{SCRIPT}</script>
</body></html>
"""
