"""Measured PDF files: real-world headers read fine, every kind of broken file gets one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from motex_dask.data import read_header, read_pdf
from motex_dask.errors import InputError

GA2O3 = Path(__file__).resolve().parent / "data" / "ga2o3"
R = np.round(np.arange(0.0, 20.0 + 1e-9, 0.01), 2)
G = np.sin(3 * R) * np.exp(-R / 10)

PDFGETX3_HEADER = """[DEFAULT]

version = 2.2.1

# input and output specifications
dataformat = QA
inputfile = sample.chi
backgroundfile = kapton.chi
outputtype = gr

# PDF calculation setup
mode = xray
wavelength = 0.1839
composition = Ga2 O3
bgscale = 1
rpoly = 0.9
qmaxinst = 24.0
qmin = 0.8
qmax = 21.5
rmin = 0
rmax = 20
rstep = 0.01

# End of config --------------------------------------------------------------

#### start data
#S 1 - PDF from PDFgetX3
#L r($\\AA$)  G($\\AA^{-2}$)
"""

XPDFSUITE_HEADER = """# xPDFsuite Configuration #
[PDF]
wavelength = 0.1821
dataformat = QA
inputfile = sample.xy
backgroundfile = bg.xy
mode = xray
bgscale = 0.98
composition = W O3
rpoly = 0.9
qmaxinst = 25.0
qmin = 0.5
qmax = 22.0
rmin = 0.0
rmax = 20.0
rstep = 0.01

[Misc]
inputdir = /data
savedfilenames = ['sample.gr']

#### start data
#S 1 - PDF from PDFgetX3
#L r($\\AA$)  G($\\AA^{-2}$)
"""

# PDFgui's "Export fit PDF": four columns r G dr dG; numbers in the header must not look like data.
PDFGUI_HEADER = """History written: Mon Jan 01 12:00:00 2024
produced by pdfgui
##### PDFgui
stype=N
qmax=25.0
qdamp=0.04
qbroad=0.0
spdiameter=0.0
1.0 2.0
3.0 4.0
##### start data
#L r(Å)  G(Å^-2)  dr  dG
"""


def columns(*cols: np.ndarray, sep: str = " ") -> str:
    return "\n".join(sep.join(f"{v:.6g}" for v in row) for row in zip(*cols)) + "\n"


def write(tmp_path: Path, name: str, text: str | bytes, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


@pytest.mark.parametrize("name, header, ncol", [
    ("pdfgetx3.gr", PDFGETX3_HEADER, 2),
    ("xpdfsuite.gr", XPDFSUITE_HEADER, 2),
    ("pdfgui.fgr", PDFGUI_HEADER, 4),
    ("bare.dat", "", 2),
    ("titled.dat", "r G\n", 2),
])
def test_real_world_headers_read_fine(tmp_path, name, header, ncol):
    cols = (R, G) if ncol == 2 else (R, G, np.zeros_like(R), np.full_like(R, 0.01))
    data = read_pdf(write(tmp_path, name, header + columns(*cols)))
    assert np.array_equal(data.r, R)
    assert np.allclose(data.g, G, atol=1e-6)
    assert (data.dg is None) == (ncol == 2)
    if ncol == 4:
        assert np.allclose(data.dg, 0.01)  # diffpy's 4th column is dG, not dr
    window = data.window(1.6, 10.0)
    assert window.r[0] == pytest.approx(1.6) and window.r[-1] == pytest.approx(9.99)


def test_header_items_are_read_for_motex_init(tmp_path):
    x3 = read_header(write(tmp_path, "a.gr", PDFGETX3_HEADER + columns(R, G)))
    assert (x3["qmin"], x3["qmax"], x3["mode"]) == ("0.8", "21.5", "xray")
    gui = read_header(write(tmp_path, "b.fgr", PDFGUI_HEADER + columns(R, G, R * 0, R * 0)))
    assert (gui["qdamp"], gui["stype"]) == ("0.04", "N")
    assert read_header(GA2O3 / "amorphousFit_Gobs.dat") == {}


def test_separators_latin1_crlf_and_trailing_comments_read_fine(tmp_path):
    for name, text in [
        ("comma.csv", "r,G\n" + columns(R, G, sep=",")),
        ("semicolon.txt", columns(R, G, sep=";")),
        ("tabs.dat", columns(R, G, sep="\t")),
        ("crlf.gr", (PDFGETX3_HEADER + columns(R, G)).replace("\n", "\r\n")),
        ("trailer.gr", columns(R, G) + "# end of data\n\n"),
    ]:
        assert len(read_pdf(write(tmp_path, name, text)).r) == len(R), name
    latin = write(tmp_path, "latin1.gr", "# r(Å) G(Å^-2)\n" + columns(R, G), encoding="latin-1")
    assert len(read_pdf(latin).r) == len(R)


def test_the_real_ga2o3_data_reads_fine():
    data = read_pdf(GA2O3 / "amorphousFit_Gobs.dat")
    assert data.r[0] == pytest.approx(0.79) and data.r[-1] == pytest.approx(15.0)
    assert data.rstep == pytest.approx(0.01)
    assert len(data.window(1.0, 10.0).r) == 900


def bad_value(i: int, value: str) -> str:
    lines = columns(R, G).splitlines()
    lines[i] = f"{R[i]:.2f} {value}"
    return "\n".join(lines) + "\n"


BAD_FILES = {
    "empty": ("", "the data file is empty"),
    "only_blank_lines": ("\n\n  \n", "the data file is empty"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00", "not a text file"),
    "one_column": ("\n".join(f"{r:.2f}" for r in R), "line 1: only one column"),
    "text_column": ("\n".join(f"{r:.2f} n/a" for r in R), "line 1: column 2 is not a number ('n/a')"),
    "nan": (bad_value(50, "nan"), "line 51: NaN or infinite"),
    "inf": (bad_value(70, "-inf"), "line 71: NaN or infinite"),
    "ragged": (bad_value(7, "0.1 0.2"), "line 8: 3 columns where the data start with 2"),
    "decimal_commas": (columns(R, G).replace(".", ","), "line 2: numbers written with decimal commas"),
    "decreasing": (columns(R[::-1], G), "line 2: r decreases"),
    "duplicated": (columns(np.r_[R[:5], R[4:]], np.r_[G, 0.0]), "line 6: duplicated r = 0.04"),
    "too_few_points": (columns(R[:5], G[:5]), "only 5 data points"),
    "broken_line_inside": ("# header\n" + "\n".join(columns(R, G).splitlines()[:300] + ["ERROR detector"]
                                                    + columns(R, G).splitlines()[300:]),
                           "line 302: expected numeric columns"),
    "no_numbers": ("just some\ntext here\n", "no data columns found"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_broken_files_get_one_clear_error(tmp_path, case):
    text, expected = BAD_FILES[case]
    path = write(tmp_path, f"{case}.gr", text)
    with pytest.raises(InputError) as err:
        read_pdf(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message
    assert "\n" not in message


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="data file not found"):
        read_pdf(tmp_path / "nope.gr")
    with pytest.raises(InputError, match="is a folder"):
        read_pdf(tmp_path)


@pytest.mark.parametrize("rmin, rmax, expected", [
    (1.0, 25.0, "data cover r = 0–20 Å but the fit range is 1–25 Å"),
    (1.0, 1.05, "only 5 data points in the fit range"),
])
def test_fit_range_outside_the_data(tmp_path, rmin, rmax, expected):
    data = read_pdf(write(tmp_path, "a.gr", columns(R, G)))
    with pytest.raises(InputError, match=expected):
        data.window(rmin, rmax)


def test_coarse_nonuniform_and_zero_data(tmp_path):
    coarse = np.round(np.arange(0, 20, 0.1), 2)
    with pytest.raises(InputError, match="r step 0.1 Å is too coarse"):
        read_pdf(write(tmp_path, "coarse.gr", columns(coarse, np.sin(coarse)))).window(1.6, 10)
    gap = np.r_[R[:500], R[520:]]
    with pytest.raises(InputError, match="not uniform in the fit range"):
        read_pdf(write(tmp_path, "gap.gr", columns(gap, np.sin(gap)))).window(1.6, 10)
    with pytest.raises(InputError, match="zero everywhere"):
        read_pdf(write(tmp_path, "zero.gr", columns(R, 0 * R))).window(1.6, 10)
