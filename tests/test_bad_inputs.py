"""A new user's mistakes through the real CLI: each gets exit code 2, one ``error:`` line on stderr
that names the offending file or field, no traceback, and leaves every existing file untouched.

One small real store is made first (``motex run --fits-only``); every bad input then runs in the same
folder against the same store, and the folder's bytes and mtimes are compared before and after.
Pure-validation cases run in-process (``cli.main``, fast); a representative few run as subprocesses.
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from campaign_fixtures import write_campaign
from motex_dask import cli
from motex_dask.store import LOCK_KEY, status_report

CLI = [sys.executable, "-m", "motex_dask.cli"]


def run_cli(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder with a tiny campaign (campaign.yaml, model.xyz, data.gr) and its finished store."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    write_campaign(folder, size=300, chunk_size=100)
    done = run_cli(["run", "campaign.yaml", "--fits-only"], folder)
    assert done.returncode == 0, done.stderr
    assert (folder / "results" / "store.zarr" / "zarr.json").is_file()
    # Progress is on stderr through the motex logger, the Dask dashboard address first.
    assert re.search(r"^motex: fit stage on cluster profile 'local' .*dashboard http", done.stderr, re.M)
    assert done.stdout == ""
    return folder


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under `folder`; for files also size, mtime and content hash."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            st = path.stat()
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
            out[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns, digest)
        else:
            out[str(path.relative_to(folder))] = (0, 0, "dir")
    return out


def check_one_error_line(rc: int, stdout: str, stderr: str, expected: list[str]) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == 2, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert stdout == ""


# ------------------------------------------------------------------------------ the bad inputs

def model_lines(ws: Path) -> list[str]:
    return (ws / "model.xyz").read_text().splitlines()


def data_lines(ws: Path) -> list[str]:
    return (ws / "data.gr").read_text().splitlines()


def first_data_line(lines: list[str]) -> int:
    return next(i for i, line in enumerate(lines) if not line.startswith("#"))


def xyz_typo(ws: Path) -> str:
    lines = model_lines(ws)
    lines[5] = lines[5].replace("C", "Xx", 1)
    return "\n".join(lines) + "\n"


def xyz_label(ws: Path) -> str:
    lines = model_lines(ws)
    lines[3] = lines[3].replace("C", "C12", 1)
    return "\n".join(lines) + "\n"


def xyz_overlap(ws: Path) -> str:
    lines = model_lines(ws)
    x, y, z = (float(v) for v in lines[2].split()[1:4])
    return "\n".join([str(int(lines[0]) + 1), lines[1], *lines[2:], f"C {x + 0.1} {y} {z}"]) + "\n"


def xyz_count(ws: Path) -> str:
    lines = model_lines(ws)
    return "\n".join([str(int(lines[0]) + 5), *lines[1:]]) + "\n"


def gr_edit(ws: Path, i: int, new: str) -> str:
    lines = data_lines(ws)
    lines[first_data_line(lines) + i] = new
    return "\n".join(lines) + "\n"


def gr_columns(ws: Path, keep: slice) -> str:
    lines = data_lines(ws)
    start = first_data_line(lines)
    return "\n".join(lines[:start] + [" ".join(line.split()[keep]) for line in lines[start:]]) + "\n"


def gr_every(ws: Path, n: int) -> str:
    lines = data_lines(ws)
    start = first_data_line(lines)
    return "\n".join(lines[:start] + lines[start::n]) + "\n"


def gr_reversed(ws: Path) -> str:
    lines = data_lines(ws)
    start = first_data_line(lines)
    return "\n".join(lines[:start] + lines[start:][::-1]) + "\n"


def gr_duplicate(ws: Path) -> str:
    lines = data_lines(ws)
    start = first_data_line(lines)
    return "\n".join(lines[: start + 10] + [lines[start + 9]] + lines[start + 10:]) + "\n"


def campaign_with(ws: Path, **changes) -> str:
    """campaign.yaml with top-level keys replaced (sections merged key by key)."""
    doc = yaml.safe_load((ws / "campaign.yaml").read_text())
    for key, value in changes.items():
        if key.startswith("drop_"):
            doc.pop(key[5:])
        elif isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass
class Case:
    """One bad input: files to write (name → text, or a function of the workspace), the CLI
    arguments, the words the error line must hold, and whether to run it as a subprocess."""

    files: dict = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)
    subprocess: bool = False


def run_case(name: str, **kw) -> Case:
    """A campaign file c_<name>.yaml (its text from `kw['campaign']`) run with `motex run`."""
    files = dict(kw.pop("files", {}))
    files[f"c_{name}.yaml"] = kw.pop("campaign")
    return Case(files=files, args=["run", f"c_{name}.yaml", "--fits-only"], **kw)


CASES: dict[str, Case] = {
    # structure files
    "structure_empty": run_case("structure_empty", files={"s_empty.xyz": ""},
                                campaign=lambda ws: campaign_with(ws, structure="s_empty.xyz"),
                                expected=["s_empty.xyz", "empty"]),
    "structure_binary": run_case("structure_binary", files={"s_binary.xyz": b"\x00\x9f\x92\x96\xff"},
                                 campaign=lambda ws: campaign_with(ws, structure="s_binary.xyz"),
                                 expected=["s_binary.xyz", "not a text structure file"]),
    "structure_element_typo": run_case("structure_element_typo", files={"s_typo.xyz": xyz_typo},
                                       campaign=lambda ws: campaign_with(ws, structure="s_typo.xyz"),
                                       expected=["s_typo.xyz", "line 6", "unknown element symbol 'Xx'"],
                                       subprocess=True),
    "structure_site_label": run_case("structure_site_label", files={"s_label.xyz": xyz_label},
                                     campaign=lambda ws: campaign_with(ws, structure="s_label.xyz"),
                                     expected=["s_label.xyz", "line 4", "'C12'"]),
    "structure_overlap": run_case("structure_overlap", files={"s_overlap.xyz": xyz_overlap},
                                  campaign=lambda ws: campaign_with(ws, structure="s_overlap.xyz"),
                                  expected=["s_overlap.xyz", "atoms 0 and 24 overlap"]),
    "structure_atom_count": run_case("structure_atom_count", files={"s_count.xyz": xyz_count},
                                     campaign=lambda ws: campaign_with(ws, structure="s_count.xyz"),
                                     expected=["s_count.xyz", "cannot read it as a structure"]),
    "structure_format": run_case("structure_format", files={"s_model.foo": "24\n\n"},
                                 campaign=lambda ws: campaign_with(ws, structure="s_model.foo"),
                                 expected=["s_model.foo", "unknown structure file format '.foo'"]),
    "structure_missing": run_case("structure_missing", campaign=lambda ws: campaign_with(ws, structure="nope.xyz"),
                                  expected=["c_structure_missing.yaml", "field 'structure'", "nope.xyz"]),
    "no_permuted_atom": run_case("no_permuted_atom", campaign=lambda ws: campaign_with(ws, permute=["W"]),
                                 expected=["model.xyz", "no atom of element 'W'", "elements present: C"]),
    # data files
    "data_one_column": run_case("data_one_column", files={"d_onecol.gr": lambda ws: gr_columns(ws, slice(0, 1))},
                                campaign=lambda ws: campaign_with(ws, data="d_onecol.gr"),
                                expected=["d_onecol.gr", "only one column"]),
    "data_non_numeric": run_case("data_non_numeric", files={"d_text.gr": lambda ws: gr_edit(ws, 300, "3.50 n/a")},
                                 campaign=lambda ws: campaign_with(ws, data="d_text.gr"),
                                 expected=["d_text.gr", "line 313", "column 2 is not a number"]),
    "data_nan": run_case("data_nan", files={"d_nan.gr": lambda ws: gr_edit(ws, 100, "1.500000 nan")},
                         campaign=lambda ws: campaign_with(ws, data="d_nan.gr"),
                         expected=["d_nan.gr", "line 113", "NaN or infinite"]),
    "data_inf": run_case("data_inf", files={"d_inf.gr": lambda ws: gr_edit(ws, 100, "1.500000 inf")},
                         campaign=lambda ws: campaign_with(ws, data="d_inf.gr"),
                         expected=["d_inf.gr", "line 113", "NaN or infinite"]),
    "data_r_decreasing": run_case("data_r_decreasing", files={"d_rev.gr": gr_reversed},
                                  campaign=lambda ws: campaign_with(ws, data="d_rev.gr"),
                                  expected=["d_rev.gr", "r decreases"]),
    "data_r_duplicated": run_case("data_r_duplicated", files={"d_dup.gr": gr_duplicate},
                                  campaign=lambda ws: campaign_with(ws, data="d_dup.gr"),
                                  expected=["d_dup.gr", "duplicated r = 0.59"]),
    "data_range_too_short": run_case("data_range_too_short", campaign=lambda ws: campaign_with(ws, fit={"rmax": 15.0}),
                                     expected=["data.gr", "data cover r = 0.5–11.99 Å", "fit range is 1–15 Å",
                                               "fit.rmin/fit.rmax"]),
    "data_grid_too_coarse": run_case("data_grid_too_coarse", files={"d_coarse.gr": lambda ws: gr_every(ws, 10)},
                                     campaign=lambda ws: campaign_with(ws, data="d_coarse.gr"),
                                     expected=["d_coarse.gr", "too coarse"]),
    "data_decimal_commas": run_case("data_decimal_commas",
                                    files={"d_comma.gr": lambda ws: gr_edit(ws, 0, "0,500000 -0,4569636576")},
                                    campaign=lambda ws: campaign_with(ws, data="d_comma.gr"),
                                    expected=["d_comma.gr", "decimal commas"]),
    "data_empty": run_case("data_empty", files={"d_empty.gr": ""},
                           campaign=lambda ws: campaign_with(ws, data="d_empty.gr"),
                           expected=["d_empty.gr", "empty"]),
    "data_is_a_folder": run_case("data_is_a_folder", campaign=lambda ws: campaign_with(ws, data="results"),
                                 expected=["c_data_is_a_folder.yaml", "field 'data'", "is a folder"]),
    # campaign files
    "misspelt_key": run_case("misspelt_key", campaign=lambda ws: campaign_with(ws, catalouge={"size": 10}),
                             expected=["c_misspelt_key.yaml", "'catalouge'", "did you mean 'catalogue'?"],
                             subprocess=True),
    "misspelt_nested_key": run_case("misspelt_nested_key", campaign=lambda ws: campaign_with(ws, fit={"qdmap": 0.04}),
                                    expected=["c_misspelt_nested_key.yaml", "'fit.qdmap'",
                                              "did you mean 'fit.qdamp'?"]),
    "key_in_wrong_section": run_case("key_in_wrong_section", campaign=lambda ws: campaign_with(ws, rmax=8.0),
                                     expected=["c_key_in_wrong_section.yaml", "did you mean 'fit.rmax'?"]),
    "wrong_type": run_case("wrong_type", campaign=lambda ws: campaign_with(ws, threshold="2.5 Å"),
                           expected=["c_wrong_type.yaml", "field 'threshold'", "must be a number"]),
    "threshold_not_positive": run_case("threshold_not_positive", campaign=lambda ws: campaign_with(ws, threshold=0),
                                       expected=["c_threshold_not_positive.yaml", "field 'threshold'", "> 0"]),
    "qmin_not_below_qmax": run_case("qmin_not_below_qmax", campaign=lambda ws: campaign_with(ws, fit={"qmin": 20.0}),
                                    expected=["c_qmin_not_below_qmax.yaml", "field 'fit.qmin'", "below qmax"]),
    "rmin_not_below_rmax": run_case("rmin_not_below_rmax", campaign=lambda ws: campaign_with(ws, fit={"rmin": 8.0}),
                                    expected=["c_rmin_not_below_rmax.yaml", "field 'fit.rmin'", "below rmax"]),
    "catalogue_size_zero": run_case("catalogue_size_zero", campaign=lambda ws: campaign_with(ws, catalogue={"size": 0}),
                                    expected=["c_catalogue_size_zero.yaml", "field 'catalogue.size'"]),
    "permute_lowercase": run_case("permute_lowercase", campaign=lambda ws: campaign_with(ws, permute=["c"]),
                                  expected=["c_permute_lowercase.yaml", "field 'permute'", "did you mean 'C'?"]),
    "required_key_missing": run_case("required_key_missing", campaign=lambda ws: campaign_with(ws, drop_data=True),
                                     expected=["c_required_key_missing.yaml", "field 'data'", "required"]),
    "yaml_syntax": run_case("yaml_syntax", campaign=lambda ws: (ws / "campaign.yaml").read_text() + "fit:\n\trmin: 1\n",
                            expected=["c_yaml_syntax.yaml", "not valid YAML (line"]),
    "yaml_duplicate_key": run_case("yaml_duplicate_key",
                                   campaign=lambda ws: (ws / "campaign.yaml").read_text()
                                   + "threshold: 2\nthreshold: 3\n",
                                   expected=["c_yaml_duplicate_key.yaml", "key 'threshold' appears twice"]),
    "zoom_bounds": run_case("zoom_bounds", campaign=lambda ws: campaign_with(ws, fit={"zoom": {"min": 1.1}}),
                            expected=["c_zoom_bounds.yaml", "field 'fit.zoom.min'", "below max"]),
    "output_is_a_file": run_case("output_is_a_file", campaign=lambda ws: campaign_with(ws, output="model.xyz"),
                                 expected=["c_output_is_a_file.yaml", "field 'output'", "is a file"]),
    "campaign_missing": Case(args=["run", "nope.yaml"], expected=["nope.yaml", "campaign file not found"]),
    "unknown_cluster_profile": Case(args=["run", "campaign.yaml", "--cluster", "no-such-profile"],
                                    expected=["no-such-profile"]),
    # stores
    "another_campaigns_store": run_case("another_campaigns_store",
                                        campaign=lambda ws: campaign_with(ws, fit={"qdamp": 0.03}),
                                        expected=["store.zarr", "another campaign"], subprocess=True),
    "store_is_not_a_store": run_case("store_is_not_a_store", files={"notastore/notes.txt": "my notes\n"},
                                     campaign=lambda ws: campaign_with(ws, store="notastore"),
                                     expected=["notastore", "not a Zarr store"]),
    "store_is_a_file": run_case("store_is_a_file", campaign=lambda ws: campaign_with(ws, store="model.xyz"),
                                expected=["model.xyz", "is a file"]),
    "status_of_a_non_store": Case(args=["status", "results"], expected=["results", "not a motex_dask campaign store"]),
    "explain_a_non_store": Case(args=["explain", "nope.zarr"], expected=["nope.zarr", "not a motex_dask"]),
    "status_of_a_missing_campaign_file": Case(args=["status", "nope.yaml"],
                                              expected=["nope.yaml", "no such campaign file"]),
    "report_before_explain": Case(args=["report", "results/store.zarr"],
                                  expected=["results", "run `motex explain results/store.zarr` first"]),
    # the command line itself
    "no_command": Case(args=[], expected=["error: motex:", "required: COMMAND", "motex --help"]),
    "unknown_command": Case(args=["rn", "campaign.yaml"], expected=["invalid choice: 'rn'"], subprocess=True),
    "missing_argument": Case(args=["run"], expected=["motex run", "required: campaign"]),
    "bad_number_option": Case(args=["pdf", "model.xyz", "--qmax", "twenty", "-o", "x.gr"],
                              expected=["--qmax", "invalid float value: 'twenty'"]),
    "pdf_qmin_above_qmax": Case(args=["pdf", "model.xyz", "--qmin", "30", "-o", "x.gr"],
                                expected=["option --qmin", "must be below qmax"]),
    "pdf_would_overwrite_data": Case(args=["pdf", "model.xyz", "-o", "data.gr"],
                                     expected=["data.gr", "already exists", "--overwrite"]),
    "report_over_a_campaign_file": Case(args=["report", "results/store.zarr", "-o", "campaign.yaml"],
                                        expected=["campaign.yaml", "ending in .html"]),
    "init_would_overwrite": Case(args=["init", "model.xyz", "data.gr", "-o", "campaign.yaml"],
                                 expected=["campaign.yaml", "already exists"]),
    "init_bad_permute": Case(args=["init", "model.xyz", "data.gr", "--permute", "c", "-o", "new.yaml"],
                             expected=["--permute", "did you mean 'C'?"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(workspace, name, capsys):
    case = CASES[name]
    for file, content in case.files.items():
        path = workspace / file
        path.parent.mkdir(exist_ok=True)
        content = content(workspace) if callable(content) else content
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(workspace)
    if case.subprocess:
        done = run_cli(case.args, workspace)
        rc, out, err = done.returncode, done.stdout, done.stderr
    else:
        cwd = Path.cwd()
        os.chdir(workspace)
        try:
            rc = cli.main(case.args)
        finally:
            os.chdir(cwd)
        out, err = capsys.readouterr()
    check_one_error_line(rc, out, err, case.expected)
    assert snapshot(workspace) == before, "a bad input changed files"


def test_there_are_enough_cases():
    assert len(CASES) >= 25
    assert sum(c.subprocess for c in CASES.values()) >= 4


# ------------------------------------------------------------------- write failures while running

def test_read_only_store_is_one_line_and_untouched(workspace, tmp_path):
    """A store nobody may write to (a colleague's, or a read-only mount) is refused in one line."""
    shutil.copytree(workspace, tmp_path / "ws", symlinks=True)
    ws = tmp_path / "ws"
    store = ws / "results" / "store.zarr"
    if os.geteuid() == 0:  # root ignores permission bits: make the folders immutable instead
        if shutil.which("chattr") is None:
            pytest.skip("running as root and chattr is missing: cannot make a store read-only")
        if subprocess.run(["chattr", "-R", "+i", str(store)], capture_output=True).returncode != 0:
            pytest.skip("running as root and chattr +i is not supported on this file system")
        undo = ["chattr", "-R", "-i", str(store)]
    else:
        subprocess.run(["chmod", "-R", "a-w", str(store)], check=True)
        undo = ["chmod", "-R", "u+w", str(store)]
    try:
        before = snapshot(ws)
        done = run_cli(["run", "campaign.yaml", "--fits-only"], ws)
        after = snapshot(ws)
    finally:
        subprocess.run(undo, check=True)
    check_one_error_line(done.returncode, done.stdout, done.stderr, [str(store)])
    assert after == before


def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG, like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_while_writing_is_one_line_and_the_run_resumes(workspace, tmp_path):
    """Writes that fail mid-run (file size limit: the same path as a full disk) give one line;
    once there is room again, the same command finishes the campaign."""
    shutil.copy(workspace / "model.xyz", tmp_path)
    shutil.copy(workspace / "data.gr", tmp_path)
    (tmp_path / "campaign.yaml").write_text(campaign_with(workspace, output="fresh"))
    done = run_cli(["run", "campaign.yaml", "--fits-only"], tmp_path, preexec_fn=_file_size_limit(300))
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr  # out of space
    assert lines[-1].startswith("error: ") and "File too large" in lines[-1] and "fresh" in lines[-1]
    assert not [line for line in lines[:-1] if not line.startswith("motex: ")], done.stderr
    again = run_cli(["-q", "run", "campaign.yaml", "--fits-only"], tmp_path)
    assert again.returncode == 0, again.stderr
    status = status_report(str(tmp_path / "fresh" / "store.zarr"))
    assert status["fits_done"] == status["fits_total"] == 300


def test_a_lock_without_its_pid_is_taken_over(workspace, tmp_path):
    """A lock file missing a field (written by hand, or torn) is no live run: the next run takes it over."""
    shutil.copytree(workspace, tmp_path / "ws", symlinks=True)
    store = tmp_path / "ws" / "results" / "store.zarr"
    (store / LOCK_KEY).write_text('{"host": "elsewhere", "started": 1700000000.0, "heartbeat": 1700000000.0, '
                                  '"token": "x"}')
    done = run_cli(["run", "campaign.yaml", "--fits-only"], tmp_path / "ws")
    assert done.returncode == 0, done.stderr
    assert "taking over the lock of a run that is gone (torn lock)" in done.stderr
    assert not (store / LOCK_KEY).exists()
