"""`motex report`: one self-contained HTML page of a campaign's outputs.

The page holds the plots (PNG files embedded as base64 data URIs), the table of atom contribution
values, the summary numbers, the fit-stage status and the campaign settings, so it can be mailed or
opened anywhere without the files next to it. The structure view is a rotatable 3D plotly figure of
the starting model's permuted atoms coloured by contribution (a series: one per frame, with a frame
slider), its JavaScript inlined so that it works offline.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .errors import InputError

CONTRIBUTIONS_CSV = "atom_contributions.csv"
SUMMARY_JSON = "summary.json"
BEST_CSV = "best_candidates.csv"
REPORT_HTML = "report.html"
FRAME_CSV = "frame_contributions.csv"
FRAME_MOTIFS_CSV = "frame_motifs.csv"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; font-size: 0.9em; }
.scroll { max-height: 40em; max-width: 100%; overflow: auto; }
.kv td { white-space: normal; overflow-wrap: anywhere; }
"""


def _outputs_dir(store: Any, outputs: str | Path | None) -> Path:
    """The folder with the explain outputs; one InputError when they are not there."""
    folder = Path(outputs) if outputs is not None else store.default_output
    needed = [folder / CONTRIBUTIONS_CSV, folder / SUMMARY_JSON]
    if not all(p.is_file() for p in needed):
        missing = ", ".join(p.name for p in needed if not p.is_file())
        raise InputError(f"{folder}: no {missing} there; run `motex explain {store.url}` first")
    return folder


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [row for row in csv.reader(fh) if row and not row[0].startswith("#")]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path}: cannot read it ({err}); run `motex explain` again") from None
    if not rows:
        raise InputError(f"{path}: the file is empty; run `motex explain` again")
    return rows[0], rows[1:]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: cannot read it ({err}); run `motex explain` again") from None
    return value if isinstance(value, dict) else {"summary": value}


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _fmt(value: Any) -> str:
    """A cell: numbers to 4 significant digits, everything escaped."""
    if isinstance(value, bool) or value is None:
        return html.escape(str(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        text = json.dumps(value, default=str)
        return html.escape(text if len(text) <= 120 else text[:117] + "…")
    return html.escape(str(value))


def _colour(value: float, scale: float) -> str:
    """Diverging background: blue for negative (the motif), red for positive."""
    t = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    if value < 0:
        return f"background: rgb({255 - int(120 * t)},{255 - int(80 * t)},255)"
    return f"background: rgb(255,{255 - int(110 * t)},{255 - int(110 * t)})"


def _csv_table(header: list[str], rows: list[list[str]]) -> str:
    """A CSV file as a table; a contribution column is shaded (negative: belongs to the motif)."""
    key = next((i for i, h in enumerate(header) if "contribution" in h.lower()), None)
    values = [_number(r[key]) for r in rows if key is not None and key < len(r)]
    scale = max((abs(v) for v in values if v is not None), default=0.0)
    numeric = [all(_number(r[i]) is not None for r in rows if i < len(r)) for i in range(len(header))]
    head = "".join(f'<th class="{"" if numeric[i] else "text"}">{html.escape(h)}</th>' for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            value = _number(cell)
            style = f' style="{_colour(value, scale)}"' if i == key and value is not None else ""
            text = f"{value:.4g}" if value is not None and not cell.strip().lstrip("-").isdigit() else html.escape(cell)
            cells.append(f'<td class="{"" if i < len(numeric) and numeric[i] else "text"}"{style}>{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            items += _flatten(v, f"{prefix}{k}.")
        else:
            items.append((f"{prefix}{k}", v))
    return items


def _kv_table(items: list[tuple[str, Any]]) -> str:
    rows = "".join(f'<tr><th class="text">{html.escape(k)}</th><td class="text">{_fmt(v)}</td></tr>'
                   for k, v in items)
    return f'<table class="kv">{rows}</table>'


#: The plots report.write_outputs makes, in reading order, with what each shows.
PLOT_CAPTIONS = {
    "structure_contributions": "The starting model coloured by contribution: blue atoms belong to the motif.",
    "atom_contributions": "Contribution of each permuted atom with its uncertainty; negative = motif.",
    "motif_fit": "The measured PDF with the refined fits of the motif and of the best candidate.",
    "rwp_vs_size": "R_wp of the fitted candidates against motif size; the motif and best candidates marked.",
    "shap_beeswarm": "SHAP values per atom over sampled candidates: how keeping each atom moves R_wp.",
    "predicted_vs_true": "XGBoost's R_wp against the fitted R_wp on the test set: how far to trust the model.",
    "learning_curve": "Training and validation error per boosting round.",
}
#: A series' plots (only a series campaign writes them).
SERIES_CAPTIONS = {
    "frame_contributions": "A series: contribution of every permuted atom (rows) in every frame (columns).",
    "frame_rwp": "A series: R_wp of each frame's motif, refined against that frame, and of its best stored candidate.",
}


def _figures(folder: Path) -> str:
    """Every PNG of the outputs folder, known plots first, as embedded images."""
    captions = {**PLOT_CAPTIONS, **SERIES_CAPTIONS}
    order = list(captions)
    pngs = sorted(folder.glob("*.png"), key=lambda p: (order.index(p.stem) if p.stem in order else len(order), p.name))
    if not pngs:
        return '<p class="note">No plots in the outputs folder.</p>'
    parts = []
    for png in pngs:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        title = png.stem.replace("_", " ").strip().capitalize()
        caption = captions.get(png.stem, title)
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(title)}">'
                     f"<figcaption>{html.escape(caption)} ({html.escape(png.name)})</figcaption></figure>")
    return "\n".join(parts)


def structure_view(folder: Path) -> str:
    """The 3D view: permuted atoms at their positions, coloured by contribution (blue: motif), as a
    plotly figure with plotly.js inlined; a series gets a frame slider."""
    import plotly.graph_objects as go

    series = (folder / FRAME_CSV).is_file()
    header, rows = _read_csv(folder / (FRAME_CSV if series else CONTRIBUTIONS_CSV))
    col = {name: header.index(name) for name in ("index", "element", "x", "y", "z", "contribution")}
    frames: dict[str, list[list[str]]] = {}
    for row in rows:
        frames.setdefault(row[header.index("frame")] if series else "", []).append(row)
    values = [_number(r[col["contribution"]]) for r in rows]
    vmax = max((abs(v) for v in values if v is not None), default=1.0) or 1.0

    def scatter(part: list[list[str]]) -> go.Scatter3d:
        c = [_number(r[col["contribution"]]) for r in part]
        return go.Scatter3d(
            x=[float(r[col["x"]]) for r in part], y=[float(r[col["y"]]) for r in part],
            z=[float(r[col["z"]]) for r in part], mode="markers",
            text=[f"{r[col['element']]}{r[col['index']]}: {r[col['contribution']]}" for r in part],
            hoverinfo="text",
            marker={"size": 7, "color": [0.0 if v is None else v for v in c], "colorscale": "RdBu_r",
                    "cmin": -vmax, "cmax": vmax, "line": {"width": 0.5, "color": "#333"},
                    "colorbar": {"title": {"text": "contribution"}}})

    names = list(frames)
    fig = go.Figure(data=[scatter(frames[names[0]])],
                    frames=[go.Frame(data=[scatter(frames[n])], name=n) for n in names] if series else None)
    fig.update_layout(height=560, margin={"l": 0, "r": 0, "t": 30, "b": 0},
                      scene={"aspectmode": "data", "xaxis": {"title": {"text": "x (Å)"}},
                             "yaxis": {"title": {"text": "y (Å)"}}, "zaxis": {"title": {"text": "z (Å)"}}},
                      title={"text": f"frame {names[0]}" if series else "atom contributions", "x": 0.02})
    if series:
        steps = [{"label": n, "method": "animate",
                  "args": [[n], {"mode": "immediate", "frame": {"duration": 0, "redraw": True},
                                 "transition": {"duration": 0}}]} for n in names]
        fig.update_layout(sliders=[{"active": 0, "steps": steps, "currentvalue": {"prefix": "frame "}}])
    return fig.to_html(full_html=False, include_plotlyjs=True, div_id="structure-view",
                       config={"displaylogo": False, "responsive": True})


def _series_section(folder: Path) -> str:
    """A series: the table of each frame's motif (the heatmap and R_wp plots are among the plots)."""
    if not (folder / FRAME_MOTIFS_CSV).is_file():
        return ""
    header, rows = _read_csv(folder / FRAME_MOTIFS_CSV)
    return (f"<h2>Series: the motif frame by frame</h2>\n<p class=\"note\">From {FRAME_MOTIFS_CSV}: each frame's "
            f"motif (its atoms with a negative contribution) refined against that frame, and the lowest stored "
            f"R<sub>wp</sub>; the heatmap and R<sub>wp</sub> plots above show the evolution, the 3D view's "
            f"slider each frame's contributions.</p>\n{_csv_table(header, rows)}")


def render_html(store_url: str, settings: dict[str, Any], status: dict[str, Any], folder: Path) -> str:
    """The report page as a string (see the module docstring)."""
    header, rows = _read_csv(folder / CONTRIBUTIONS_CSV)
    summary = _read_json(folder / SUMMARY_JSON)
    # Lists of records (best candidates, top atoms) are tables of their own, not summary cells.
    numbers = {k: v for k, v in summary.items()
               if not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))}
    best = ""
    if (folder / BEST_CSV).is_file():
        best_header, best_rows = _read_csv(folder / BEST_CSV)
        best = (f"<h2>Motif and best candidates</h2>\n<p class=\"note\">From {BEST_CSV}: the motif (atoms with a "
                f"negative contribution) and the lowest-R<sub>wp</sub> candidates, refined again.</p>\n"
                f"{_csv_table(best_header, best_rows)}")
    status_items = [(k, status.get(k)) for k in ("fits_done", "fits_total", "chunks_done", "chunks_total",
                                                  "duplicates", "failed", "by_status", "best") if k in status]
    title = f"ML-MotEx report: {Path(str(settings.get('structure', 'campaign'))).name}"
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="note">Store {html.escape(store_url)}; outputs {html.escape(str(folder))};
written {when} by motex_dask {html.escape(__version__)}.</p>
<p>Each atom's contribution is the mean SHAP value of its feature over the candidates that keep the
atom minus the mean over those that remove it, in units of the predicted R<sub>wp</sub>:
a <b>negative</b> value (blue) means keeping the atom lowers R<sub>wp</sub>, so the atom belongs to the
motif behind the data; a positive value (red) means the fit is better without it. The column
<code>best_fits_share</code> needs no model: the share of the best 1 % of fits that keep the atom.</p>
<h2>Structure</h2>
<p class="note">The permuted atoms of the starting model coloured by contribution (blue: motif); drag to
rotate, scroll to zoom{"; the slider picks the frame" if (folder / FRAME_CSV).is_file() else ""}.</p>
{structure_view(folder)}
<h2>Plots</h2>
{_figures(folder)}
{_series_section(folder)}
<h2>Atom contributions</h2>
<p class="note">From {html.escape(CONTRIBUTIONS_CSV)}: {len(rows)} atoms.</p>
{_csv_table(header, rows)}
{best}
<h2>Summary</h2>
{_kv_table(_flatten(numbers))}
<h2>Fit stage</h2>
{_kv_table(_flatten(dict(status_items)))}
<h2>Campaign settings</h2>
<pre>{html.escape(yaml.safe_dump(settings, sort_keys=False, allow_unicode=True))}</pre>
</body>
</html>
"""


def _check_target(target: Path) -> None:
    if target.is_dir():
        raise InputError(f"{target}: is a folder; give the HTML file to write, e.g. -o report.html")
    if target.suffix.lower() not in (".html", ".htm"):  # never write a page over a data or campaign file
        raise InputError(f"{target}: the report is an HTML page; give a file name ending in .html")


def write_html_report(store: Any, output: str | Path | None = None, outputs: str | Path | None = None) -> Path:
    """Write the report of a store (a CampaignStore, or its URL); `output`: the HTML file (default
    <outputs>/report.html); `outputs`: the folder `motex explain` wrote (default: the store's
    `default_output`, beside a moved or copied store)."""
    from .store import CampaignStore, status_report

    if output is not None:  # checked first: a wrong -o should not wait for the store
        _check_target(Path(output))
    store = CampaignStore.readonly(store)
    folder = _outputs_dir(store, outputs)
    target = Path(output) if output is not None else folder / REPORT_HTML
    _check_target(target)
    page = render_html(store.url, store.settings, status_report(store), folder)
    # Write then rename: an interrupted run never leaves half a report over a good one.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
