"""`motex report`: one self-contained HTML page whose images load in a real browser (headless Chromium).

A tiny real campaign is run end to end (fits, learning with fixed hyper-parameters, outputs), then
the page is written and opened in Chromium; an inline script, added to a copy of the page, records
every image's natural size once the page has loaded, and the dumped DOM is compared with the PNG
files' own sizes.
"""

from __future__ import annotations

import base64
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from campaign_fixtures import write_campaign
from motex_dask import cli
from motex_dask.htmlreport import PLOT_CAPTIONS, write_html_report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
CHECK_IMAGES = """<script>
addEventListener("load", () => {
  const sizes = [...document.images].map(i => i.complete && i.naturalWidth > 0
                                              ? i.naturalWidth + "x" + i.naturalHeight : "broken");
  document.body.setAttribute("data-images", sizes.join(","));
});
</script>
"""


@pytest.fixture(scope="module")
def explained(tmp_path_factory) -> Path:
    """A finished tiny campaign with its outputs; returns the campaign folder."""
    folder = tmp_path_factory.mktemp("report")
    write_campaign(folder, size=400, chunk_size=200,
                   learn={"tune": False, "bootstrap": 10, "max_rounds": 100, "best_candidates": 2})
    done = subprocess.run([sys.executable, "-m", "motex_dask.cli", "-q", "run", "campaign.yaml"], cwd=folder,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return folder


def chromium_dom(html: str, tmp_path: Path) -> str:
    """The DOM of `html` after headless Chromium ran its scripts (offline, throwaway profile)."""
    probe = tmp_path / "probe.html"
    probe.write_text(html)
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
            capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def png_size(path: Path) -> str:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the IHDR chunk
    return f"{width}x{height}"


def test_report_is_self_contained(explained, capsys):
    outputs = explained / "results"
    assert cli.main(["report", str(outputs / "store.zarr")]) == 0
    page_path = Path(capsys.readouterr().out.strip())
    assert page_path == outputs / "report.html"
    page = page_path.read_text()
    pngs = sorted(outputs.glob("*.png"))
    assert {p.stem for p in pngs} >= set(PLOT_CAPTIONS)
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert sorted(base64.b64decode(e) for e in embedded) == sorted(p.read_bytes() for p in pngs)
    # Nothing is fetched from elsewhere: no external scripts, styles, images or fonts (the 3D view's
    # plotly.js is inlined: its code, not the page's markup, holds the strings of a link it can draw).
    markup = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r'(src|href)="(?!data:)', markup) and "<link" not in markup and "@import" not in markup
    # The atom table and the settings are there.
    table = (outputs / "atom_contributions.csv").read_text().splitlines()
    assert f"{len(table) - 1} atoms" in page
    assert "permute:" in page and "threshold:" in page
    # What a contribution is, in the words of its computation (explain.py): kept minus removed.
    assert ("over the candidates that keep the atom minus the mean over those that remove it"
            in " ".join(page.split()))
    # The structure picture comes first.
    assert page.index(PLOT_CAPTIONS["structure_contributions"]) < page.index(PLOT_CAPTIONS["learning_curve"])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_images_load_in_headless_chromium(explained, tmp_path):
    outputs = explained / "results"
    page = write_html_report(str(outputs / "store.zarr"), tmp_path / "report.html")
    dom = chromium_dom(page.read_text().replace("</body>", CHECK_IMAGES + "</body>"), tmp_path)
    found = re.search(r'data-images="([^"]*)"', dom)
    assert found, "the page's load event never ran in Chromium"
    sizes = found.group(1).split(",")
    assert "broken" not in sizes
    expected = [png_size(outputs / re.search(r"\(([^()]+\.png)\)</figcaption>", f).group(1))
                for f in re.findall(r"<figcaption>.*?</figcaption>", page.read_text())]
    assert sizes == expected and len(sizes) == len(list(outputs.glob("*.png")))


def test_report_without_outputs_says_run_explain(explained, tmp_path, capsys):
    store = str(explained / "results" / "store.zarr")
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    assert cli.main(["report", store, "--outputs", str(empty), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {empty}: no atom_contributions.csv, summary.json there; run `motex explain {store}` first"
    assert list(tmp_path.iterdir()) == [empty] and not list(empty.iterdir())
