"""report.html: one self-contained page (inline CSS, figures as base64 PNG, no scripts, no external URLs).

The template lives here as a string so that it ships with the package without package-data rules."""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import jinja2

from .model import fmt_num

TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>simgen report: {{ verdict|upper }}</title>
<style>
:root { --pass:#276749; --pass-bg:#c6f6d5; --warn:#8a5a00; --warn-bg:#feebc8; --fail:#c53030; --fail-bg:#fed7d7;
        --info:#4a5568; --info-bg:#e2e8f0; --ink:#1a202c; --muted:#5a6577; --line:#e2e8f0; --real:#2b6cb0; --syn:#dd6b20; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f6f9; color: var(--ink); font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
header.top { background: #fff; border-bottom: 4px solid var(--{{ verdict }}); }
header.top .in { max-width: 1180px; margin: 0 auto; padding: 22px 28px; display: flex; gap: 28px; align-items: center; flex-wrap: wrap; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 0; }
h3 { font-size: 15px; margin: 18px 0 6px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.sub { color: var(--muted); font-size: 14px; }
.sub code { background: #edf2f7; padding: 1px 5px; border-radius: 4px; font-size: 12.5px; }
.verdict { margin-left: auto; text-align: center; padding: 12px 26px; border-radius: 12px; background: var(--{{ verdict }}-bg); color: var(--{{ verdict }}); }
.verdict b { display: block; font-size: 30px; letter-spacing: .06em; }
.counts { display: flex; gap: 8px; margin-top: 8px; }
.badge { display: inline-block; min-width: 46px; text-align: center; padding: 1px 9px; border-radius: 999px; font-size: 12px; font-weight: 700; text-transform: uppercase; letter-spacing: .04em; }
.pass { background: var(--pass-bg); color: var(--pass); } .warn { background: var(--warn-bg); color: var(--warn); }
.fail { background: var(--fail-bg); color: var(--fail); } .info { background: var(--info-bg); color: var(--info); }
nav { margin: 18px 0 8px; display: flex; flex-wrap: wrap; gap: 8px; }
nav a { text-decoration: none; color: var(--ink); background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 5px 12px; font-size: 14px; }
nav a:hover { border-color: #a0aec0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 12px; padding: 20px 24px; margin: 18px 0; box-shadow: 0 1px 2px rgba(0,0,0,.04); }
.card > .head { display: flex; align-items: center; gap: 12px; }
.summary { font-size: 15.5px; margin: 10px 0 4px; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; margin: 6px 0; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12.5px; background: #f8fafc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th.num { text-align: right; }
td.detail { color: var(--muted); font-size: 12.5px; }
tr.group td { background: #f8fafc; font-weight: 600; padding-top: 9px; }
tr.group a { color: var(--ink); }
.scroll { max-height: 420px; overflow: auto; border: 1px solid var(--line); border-radius: 8px; }
.scroll table { margin: 0; }
.scroll th { position: sticky; top: 0; }
figure { margin: 16px 0 6px; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; border: 1px solid var(--line); border-radius: 8px; }
figcaption { color: var(--muted); font-size: 13px; text-align: center; margin-top: 6px; }
.legend-real { color: var(--real); font-weight: 600; } .legend-syn { color: var(--syn); font-weight: 600; }
footer { color: var(--muted); font-size: 12.5px; margin-top: 30px; }
details summary { cursor: pointer; color: var(--muted); font-size: 13.5px; margin: 14px 0 6px; }
details[open] summary { margin-bottom: 6px; }
</style>
</head>
<body>
<header class="top"><div class="in">
  <div>
    <h1>Synthetic data report</h1>
    <div class="sub"><span class="legend-syn">synthetic</span> <code>{{ inputs.synthetic.root }}</code> ({{ inputs.synthetic.images_sampled }} of {{ inputs.synthetic.images_total }} images)
      &nbsp;vs&nbsp; <span class="legend-real">real</span> <code>{{ inputs.real.root }}</code> ({{ inputs.real.images_sampled }} of {{ inputs.real.images_total }} images)</div>
    {% if inputs.run %}<div class="sub">run <code>{{ inputs.run }}</code></div>{% endif %}
    {% if options.get("category_map") %}<div class="sub">synthetic classes renamed {% for k, v in options.category_map.map.items() %}<code>{{ k }}</code> &rarr; <code>{{ v }}</code>{% if not loop.last %}, {% endif %}{% endfor %} ({{ options.category_map.from }})</div>{% endif %}
    <div class="counts">{% for k in ("pass", "warn", "fail", "info") %}<span class="badge {{ k }}">{{ counts[k] }} {{ k }}</span>{% endfor %}</div>
  </div>
  <div class="verdict"><span class="sub">overall</span><b>{{ verdict|upper }}</b></div>
</div></header>
<main>
<nav>{% for s in sections %}<a href="#{{ s.key }}"><span class="badge {{ s.status }}">{{ s.status }}</span> {{ s.title }}</a>{% endfor %}</nav>

<section class="card" id="summary">
  <div class="head"><h2>Summary of checks</h2></div>
  <table>
    <tr><th>check</th><th>value</th><th>threshold</th><th>status</th></tr>
    {% for s in sections %}
    <tr class="group"><td colspan="4"><a href="#{{ s.key }}">{{ s.title }}</a></td></tr>
    {% for c in s.checks %}<tr><td>{{ c.name }}</td><td class="num">{{ c.value|num }}</td><td class="detail">{{ c.threshold }}</td><td><span class="badge {{ c.status }}">{{ c.status }}</span></td></tr>{% endfor %}
    {% endfor %}
  </table>
  {% if unavailable_sections %}<p class="sub">Not part of this build: {{ unavailable_sections|join(", ") }}.</p>{% endif %}
</section>

{% for s in sections %}
<section class="card" id="{{ s.key }}">
  <div class="head"><span class="badge {{ s.status }}">{{ s.status }}</span><h2>{{ s.title }}</h2></div>
  <p class="summary">{{ s.summary }}</p>
  {% for f in s.figures %}<figure><img alt="{{ f.caption }}" src="data:image/png;base64,{{ images[f.path] }}"><figcaption>{{ f.caption }}</figcaption></figure>{% endfor %}
  {% for t in s.tables %}<h3>{{ t.title }}</h3>
  <div class="{{ 'scroll' if t.rows|length > 30 else '' }}"><table><tr>{% for c in t.columns %}<th class="{{ 'num' if (t|numeric_columns)[loop.index0] else '' }}">{{ c }}</th>{% endfor %}</tr>
  {% for r in t.rows %}<tr>{% for v in r %}{% if v in statuses %}<td><span class="badge {{ v }}">{{ v }}</span></td>{% else %}<td class="{{ 'num' if v is number or v is none else '' }}">{{ v|num }}</td>{% endif %}{% endfor %}</tr>{% endfor %}
  </table></div>{% endfor %}
  {% if s.checks %}<details{{ ' open' if not s.tables else '' }}><summary>{{ s.checks|length }} checks: thresholds and what they mean</summary>
  <table><tr><th>check</th><th>value</th><th>status</th><th>threshold</th><th>what it means</th></tr>
  {% for c in s.checks %}<tr><td>{{ c.name }}</td><td class="num">{{ c.value|num }}</td><td><span class="badge {{ c.status }}">{{ c.status }}</span></td><td class="detail">{{ c.threshold }}</td><td class="detail">{{ c.detail }}</td></tr>{% endfor %}
  </table></details>{% endif %}
</section>
{% endfor %}

<footer>Generated by <code>simgen report</code> at {{ created }}. Every number and threshold is in <code>report.json</code> next to this file;
similarities follow SDMetrics' QualityReport (1 &minus; KS statistic for numbers, 1 &minus; total variation for categories; 1 = same distribution).
<details><summary>options</summary><pre>{{ options_text }}</pre></details></footer>
</main>
</body>
</html>
"""


def num(v: Any) -> str:
    """Table cells: numbers in the report's one format (model.fmt_num: 3 significant digits, scientific at or above 1e4
    and below 1e-3), None as a dash, dicts as ``key: value`` lists, text as it is."""
    if isinstance(v, dict):
        return ", ".join(f"{k}: {n}" for k, n in v.items())
    if v is None or isinstance(v, (int, float)) and not isinstance(v, bool):
        return fmt_num(v)
    return str(v)


def numeric_columns(table: dict[str, Any]) -> list[bool]:
    """Which columns hold numbers (or dashes) in every row: their headers are right-aligned like their cells, so a number
    does not sit under the next column's header."""
    rows = table.get("rows") or []
    return [bool(rows) and all(len(r) > i and (r[i] is None or isinstance(r[i], (int, float)) and not isinstance(r[i], bool))
                               for r in rows) for i in range(len(table.get("columns") or []))]


def render_html(report: dict[str, Any], folder: Path) -> str:
    """The page for ``report`` (report.json's dict); figures are read from ``folder`` and inlined."""
    import json

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = num
    env.filters["numeric_columns"] = numeric_columns
    images = {f["path"]: base64.b64encode((folder / f["path"]).read_bytes()).decode("ascii")
              for s in report["sections"] for f in s["figures"]}
    return env.from_string(TEMPLATE).render(**report, images=images, statuses=("pass", "warn", "fail", "info"), options_text=json.dumps(report["options"], indent=1))
