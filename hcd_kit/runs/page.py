"""``runs/index.html``: the ``hcd runs`` table as one self-contained page (no network: inline CSS and script).

Each run links to its ``report.html`` (``hcd report``) with a path relative to the page, so the folder can be
copied or served as it is; a run without one says how to make it. Clicking a header sorts by that column.
The page is written atomically.
"""

from __future__ import annotations

import html
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from hcd_kit.fsutil import atomic_write_text
from hcd_kit.runs.table import DISPLAY, NUMERIC, TIME_NOTE, cells

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:14px}th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
th{background:#f3f3f3;cursor:pointer;user-select:none}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr:hover td{background:#fafafa}.missing{color:#999}.note{color:#a60;font-size:12px;max-width:40em}
p.small{color:#666;font-size:12px}
"""
# Sort by a clicked header: numbers numerically (blank last), text alphabetically; a second click reverses.
_SCRIPT = """
document.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
var body=th.closest('table').tBodies[0],rows=Array.from(body.rows),up=th.dataset.up!=='1';
function v(r){var t=r.cells[i].dataset.v||r.cells[i].textContent.trim();var n=parseFloat(t);
return t===''?null:(isNaN(n)?t.toLowerCase():n);}
rows.sort(function(a,b){var x=v(a),y=v(b);if(x===null)return 1;if(y===null)return -1;
return (x<y?-1:x>y?1:0)*(up?1:-1);});th.dataset.up=up?'1':'0';rows.forEach(function(r){body.appendChild(r);});});});
"""


def _report_cell(row: dict[str, Any], page_dir: Path) -> str:
    if row["report"]:
        href = Path(os.path.relpath(Path(row["report"]).resolve(), page_dir.resolve())).as_posix()
        return f'<a href="{html.escape(href)}">report</a>'
    return f'<span class="missing">not made yet: hcd report --run-dir {html.escape(row["path"])}</span>'


def render_page(rows: list[dict[str, Any]], page_dir: Path, title: str = "hcd runs") -> str:
    """The page's HTML for ``rows`` (``runs_table``), with links relative to ``page_dir``."""
    heads = list(DISPLAY)
    th = "".join(f'<th class="num">{h}</th>' if h in NUMERIC else f"<th>{h}</th>" for h in heads)
    body = []
    for row in rows:
        tds = []
        for h, text in zip(heads, cells(row)):
            sort_value = f' data-v="{row["train_s"]}"' if h == "time" and row["train_s"] is not None else ""
            tds.append(
                f'<td class="num"{sort_value}>{html.escape(text)}</td>'
                if h in NUMERIC
                else f"<td>{html.escape(text)}</td>"
            )
        tds.append(f"<td>{_report_cell(row, page_dir)}</td>")
        tds.append(f'<td class="note">{html.escape(row["note"] or "")}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
        f'<p class="small">{len(rows)} run(s), written {stamp} by <code>hcd runs</code>. CV AUC: pooled '
        f"out-of-fold, 1 view; TTA AUC: from oof_tta&lt;N&gt;.csv (hcd predict --tta N). "
        f"{html.escape(TIME_NOTE)}. public/private: best scores of the ledger's submissions of the run.</p>\n"
        f"<table><thead><tr>{th}<th>report</th><th>note</th></tr></thead><tbody>\n"
        + "\n".join(body)
        + f"\n</tbody></table>\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )


def write_page(rows: list[dict[str, Any]], path: str | os.PathLike[str], title: str = "hcd runs") -> Path:
    """``render_page`` written atomically at ``path``; returns it."""
    path = Path(path)
    atomic_write_text(path, render_page(rows, path.parent, title))
    return path
