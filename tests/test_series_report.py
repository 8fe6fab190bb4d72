"""A series campaign end to end: per-frame learning and explaining, the series files, and the
report's 3D structure view with its frame slider rendered in headless Chromium."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from campaign_fixtures import write_series_campaign
from motex_dask.htmlreport import write_html_report
from test_htmlreport import CHECK_IMAGES, CHROMIUM, chromium_dom

N_FRAMES = 3
# after load: the plot's layout exists, how many WebGL canvases and slider frames it has
CHECK_VIEW = """<script>
addEventListener("load", () => setTimeout(() => {
  const g = document.getElementById("structure-view");
  const frames = g && g._transitionData ? Object.keys(g._transitionData._frameHash).length : -1;
  document.body.setAttribute("data-view", [g && g._fullLayout ? "drawn" : "none",
    document.querySelectorAll("#structure-view canvas").length, frames].join(","));
}, 500));
</script>
"""


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    """A finished tiny series campaign (3 frames) with its outputs; returns the outputs folder."""
    folder = tmp_path_factory.mktemp("series")
    write_series_campaign(folder, n_frames=N_FRAMES, size=400, chunk_size=200,
                          learn={"tune": False, "bootstrap": 10, "max_rounds": 100, "best_candidates": 2})
    done = subprocess.run([sys.executable, "-m", "motex_dask.cli", "-q", "run", "campaign.yaml"], cwd=folder,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return folder / "results"


def test_series_outputs_hold_every_frame(series):
    with open(series / "frame_contributions.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["frame", "index", "element", "x", "y", "z", "contribution", "uncertainty"]
    names = [f"frame_{k}.gr" for k in range(1, N_FRAMES + 1)]
    assert sorted({r[0] for r in rows[1:]}) == names and len(rows) - 1 == 24 * N_FRAMES
    assert all(r[6] not in ("", "nan") for r in rows[1:])
    with open(series / "frame_motifs.csv", newline="") as fh:
        motifs = list(csv.DictReader(fh))
    assert [m["frame"] for m in motifs] == names and all(m["status"] == "OK" for m in motifs)
    for k in range(1, N_FRAMES + 1):
        assert (series / "motifs" / f"frame_{k}.xyz").is_file()
    assert (series / "frame_contributions.png").is_file() and (series / "frame_rwp.png").is_file()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_series_report_renders_the_3d_view_with_a_frame_slider(series, tmp_path):
    page = write_html_report(str(series / "store.zarr"), tmp_path / "report.html")
    text = page.read_text()
    assert "Series: the motif frame by frame" in text and 'id="structure-view"' in text
    dom = chromium_dom(text.replace("</body>", CHECK_IMAGES + CHECK_VIEW + "</body>"), tmp_path)
    view = re.search(r'data-view="([^"]*)"', dom)
    assert view, "the page's load event never ran in Chromium"
    drawn, canvases, frames = view.group(1).split(",")
    assert drawn == "drawn" and int(canvases) >= 1 and int(frames) == N_FRAMES
    images = re.search(r'data-images="([^"]*)"', dom).group(1).split(",")
    assert "broken" not in images and len(images) == len(list(series.glob("*.png")))
