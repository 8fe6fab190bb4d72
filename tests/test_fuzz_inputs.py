"""Generated user inputs (hypothesis) through the real command line, in-process.

For every generated input a command ends one of two ways: exit 0 with finite outputs, or exit 2 with
exactly one ``error:`` line on stderr, no traceback, and no file changed. A bug (any other exception)
fails the test with its traceback. Covered: every option `motex pdf` declares (read from the parser,
so options added later are fuzzed too), structure files, PDF data files, campaign files, cluster
profiles and the store's lock file. Examples are derandomised: CI runs the same cases every time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from campaign_fixtures import write_campaign
from motex_dask import cli
from motex_dask.store import LOCK_KEY

#: Generated cases per test; together at least the 2,000 that CI runs.
EXAMPLES = {"pdf_options": 600, "structure_files": 300, "data_files": 450, "campaign_files": 450,
            "cluster_profiles": 350, "lock_files": 100, "other_numbers": 100}
FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# ------------------------------------------------------------------------------------- harness


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` with a hash of each file's bytes (the inputs here are small)."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def invoke(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """`motex ARGV` in-process in `cwd`: (exit code, stdout, stderr). Numeric warnings are errors."""
    out, err = io.StringIO(), io.StringIO()
    here = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # overflow/invalid value: NaN on its way
            rc = cli.main(argv)
    finally:
        os.chdir(here)
    return rc, out.getvalue(), err.getvalue()


def check_outcome(rc: int, stdout: str, stderr: str, argv: list[str]) -> None:
    """Exit 0, or exit 2 with one `error:` line and nothing else."""
    assert "Traceback" not in stderr, (argv, stderr)
    if rc == 0:
        return
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == 2, (argv, rc, stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, stderr)
    assert stdout == "", (argv, stdout)


def run_and_check(argv: list[str], folder: Path, outputs: tuple[str, ...] = ()) -> tuple[int, str]:
    """Run, check the outcome and that only `outputs` may have changed (and only on exit 0).

    Returns (exit code, stdout); the outputs are removed again so the next example starts clean.
    """
    before = snapshot(folder)
    rc, stdout, stderr = invoke(argv, folder)
    check_outcome(rc, stdout, stderr, argv)
    after = snapshot(folder)
    if rc == 0:
        for name in outputs:
            after.pop(name, None)
            before.pop(name, None)
    assert after == before, (argv, stderr, set(after.items()) ^ set(before.items()))
    return rc, stdout


def fuzz_run(argv: list[str], folder: Path, outputs: tuple[str, ...] = ()) -> tuple[int, str]:
    """`run_and_check` inside a hypothesis test, counting outcomes (pytest --hypothesis-show-statistics)."""
    rc, stdout = run_and_check(argv, folder, outputs)
    event(f"exit {rc}")
    return rc, stdout


def cleanup(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).unlink(missing_ok=True)


def read_gr_finite(path: Path) -> np.ndarray:
    """The (r, G) columns of a written PDF file; asserts they are finite and not empty."""
    table = np.loadtxt(path, comments="#", ndmin=2)
    assert table.shape[0] >= 2 and table.shape[1] == 2, table.shape
    assert np.isfinite(table).all()
    assert np.all(np.diff(table[:, 0]) > 0)
    return table


# ---------------------------------------------------------------------------------- strategies

SPECIAL_NUMBERS = ["nan", "NaN", "inf", "-inf", "+inf", "infinity", "1e400", "-1e400", "0", "-0", "0.0",
                   "1e-320", "5e-324", "1e308", "-1", "1", "", " ", "abc", "1,5", "0x10", "1_0", "١"]

number_text = st.one_of(
    st.sampled_from(SPECIAL_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-1e3, max_value=1e3).map(lambda x: f"{x:.6g}"),
    st.floats(min_value=1e-5, max_value=1.0).map(lambda x: f"{x:.4g}"),
    st.integers(-10**6, 10**6).map(str),
)
element = st.sampled_from(["H", "C", "O", "W", "Ga", "Mo", "Xx", "c", "w", "", "O1", "Ga2+", "Og", "D"])
free_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def option_value(action: argparse.Action) -> st.SearchStrategy[str]:
    """Text for one option's value, judged from how the parser declares it."""
    if action.choices:
        return st.one_of(st.sampled_from([str(c) for c in action.choices]), free_text)
    if action.type in (float, int):
        typical = (st.floats(action.default / 4, action.default * 4) if isinstance(action.default, (int, float))
                   and action.default > 0 else st.floats(0, 1))
        return st.one_of(typical.map(lambda x: f"{x:.5g}"), typical.map(repr), number_text)
    # Anything else (EL=VALUE lists, names): numbers, element=number pairs and free text.
    pair = st.builds(lambda el, v: f"{el}={v}", element, number_text)
    return st.one_of(number_text, pair, st.lists(pair, min_size=1, max_size=3).map(",".join), free_text)


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


#: Options a command's fuzz leaves to the harness: output path, help, logging, overwrite.
_HARNESS_OPTIONS = {"-o", "--output", "-h", "--help", "-q", "--quiet", "-v", "--verbose", "--overwrite"}


def fuzzable_options(command: str) -> list[argparse.Action]:
    """The optional arguments of `motex COMMAND` that take a value (flags excluded)."""
    return [a for a in subparser(command)._actions
            if a.option_strings and a.nargs != 0 and not _HARNESS_OPTIONS & set(a.option_strings)]


@st.composite
def option_args(draw, command: str) -> list[str]:
    """Some of the command's options, each `--name=value` (or `--name value ...` for nargs)."""
    args: list[str] = []
    for action in fuzzable_options(command):
        if not draw(st.booleans()):
            continue
        flag = action.option_strings[-1]
        if action.nargs in ("+", "*"):
            args += [flag, *draw(st.lists(option_value(action), min_size=1, max_size=3))]
        else:
            args.append(f"{flag}={draw(option_value(action))}")
    return args


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A campaign folder: model.xyz (C60 patch, 24 atoms), data.gr, campaign.yaml, a tiny W2O4 model."""
    folder = tmp_path_factory.mktemp("fuzz")
    write_campaign(folder, size=300, chunk_size=100)
    (folder / "tiny.xyz").write_text("6\nW2O4\nW 0 0 0\nW 3.2 0 0\nO 1.7 0 0\nO 0 1.8 0\nO 3.2 1.8 0\n"
                                     "O 1.6 -1.2 1.0\n")
    return folder


def test_the_pdf_parser_declares_the_options_fuzzed():
    """The fuzz reads `motex pdf`'s options from the parser: a numeric option added later is fuzzed too."""
    names = {a.option_strings[-1] for a in fuzzable_options("pdf")}
    assert {"--qmin", "--qmax", "--qdamp", "--qbroad", "--rmin", "--rmax", "--rstep", "--uiso", "--zoom",
            "--radiation"} <= names


# ------------------------------------------------------------------------------------ motex pdf


@pytest.mark.parametrize("argv", [
    ["--qmax=inf"], ["--qmax=1e400"], ["--uiso=nan"], ["--qdamp=nan"], ["--zoom=nan"], ["--rstep=inf"],
    ["--qbroad=inf"], ["--rmin=5", "--rmax=5.001"], ["--rstep=1e-9"], ["--qmax=1e9"], ["--zoom=0"],
], ids=" ".join)
def test_pdf_escapes_found_in_review_are_one_error_line(ws, argv):
    rc, _ = run_and_check(["pdf", "tiny.xyz", "-o", "out.gr", *argv], ws)
    assert rc == 2
    assert not (ws / "out.gr").exists()


@settings(FUZZ, max_examples=EXAMPLES["pdf_options"])
@given(args=option_args("pdf"))
def test_pdf_options(ws, args):
    rc, _ = fuzz_run(["pdf", "tiny.xyz", "-o", "out.gr", *args], ws, outputs=("out.gr",))
    if rc == 0:
        read_gr_finite(ws / "out.gr")
    cleanup(ws, "out.gr")


def test_pdf_long_range_fine_step_is_quick_and_finite(ws):
    """The largest grid the ranges allow: the sine transform is an FFT, not a len(r) × nQ matrix."""
    rc, _ = run_and_check(["pdf", "tiny.xyz", "-o", "out.gr", "--qmax=100", "--rmax=100", "--rstep=0.0001"],
                          ws, outputs=("out.gr",))
    assert rc == 0
    assert len(read_gr_finite(ws / "out.gr")) == 990_000
    cleanup(ws, "out.gr")


# ------------------------------------------------------------------------------ structure files

coordinate = st.one_of(st.floats(-8, 8).map(lambda x: f"{x:.4f}"), number_text)


@st.composite
def xyz_text(draw) -> str:
    atoms = draw(st.lists(st.tuples(element, coordinate, coordinate, coordinate), min_size=0, max_size=6))
    count = draw(st.one_of(st.just(str(len(atoms))), number_text))
    comment = draw(st.one_of(st.just("model"), free_text, st.just('Lattice="1 0 0 0 1 0 0 0 1" pbc="T T T"')))
    body = "\n".join(" ".join(a) for a in atoms)
    return f"{count}\n{comment}\n{body}\n"


structure_file = st.one_of(
    st.tuples(st.just(".xyz"), xyz_text()),
    st.tuples(st.sampled_from([".xyz", ".cif", ".pdb", ".foo", ""]), free_text),
    st.tuples(st.sampled_from([".cif", ".pdb"]), st.sampled_from([
        "data_x\n_cell_length_a 5\n_cell_length_b 5\n_cell_length_c 5\n_cell_angle_alpha 90\n"
        "_cell_angle_beta 90\n_cell_angle_gamma 90\nloop_\n_atom_site_label\n_atom_site_fract_x\n"
        "_atom_site_fract_y\n_atom_site_fract_z\nW1 0 0 0\nO1 0.5 0 0\n",
        "ATOM      1  W   W     1       0.000   0.000   0.000  1.00  0.00           W\n"
        "ATOM      2  O   O     1       1.700   0.000   0.000  1.00  0.00           O\nEND\n",
        "ATOM      1  W   W     1       nan   0.000   0.000  1.00  0.00           W\nEND\n"])),
)


@settings(FUZZ, max_examples=EXAMPLES["structure_files"])
@given(file=structure_file, raw=st.binary(max_size=40), use_raw=st.booleans())
def test_structure_files(ws, file, raw, use_raw):
    suffix, text = file
    path = ws / f"s{suffix}"
    path.write_bytes(raw if use_raw and suffix == ".xyz" else text.encode())
    try:
        rc, _ = fuzz_run(["pdf", path.name, "-o", "out.gr", "--rmax=8"], ws, outputs=("out.gr",))
        if rc == 0:
            read_gr_finite(ws / "out.gr")
    finally:
        cleanup(ws, "out.gr", path.name)


# ---------------------------------------------------------------------------------- data files

HEADER_LINES = ["[DEFAULT]", "qmax = 22.0", "qmin = 0.5", "qdamp = nan", "mode = xray", "stype=N",
                "1.0 2.0", "3 4 5", "# comment", "", "r G", "qmax = inf", "radiation: neutron", "title é"]


@st.composite
def data_text(draw) -> str:
    header = draw(st.lists(st.one_of(st.sampled_from(HEADER_LINES), free_text), max_size=10))
    marker = draw(st.sampled_from(["", "#### start data", "#L r G dr dG", "##### start data\n#L r(Å) G(Å^-2)"]))
    n = draw(st.sampled_from([0, 5, 400, 1000, 1000]))
    rmin = draw(st.sampled_from([0.0, 0.01, 0.5, 1.0]))
    step = draw(st.sampled_from([0.01, 0.01, 0.01, 0.02, 0.1, -0.01, 0.0]))
    ncol = draw(st.sampled_from([1, 2, 2, 3, 4]))
    r = rmin + step * np.arange(n)
    g = np.sin(3 * r) * np.exp(-0.1 * r)
    cols = [r, g, np.full(n, 0.01), np.full(n, 0.001)][:ncol]
    rows = [" ".join(f"{c[i]:.6g}" for c in cols) for i in range(n)]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # damage a few lines
        if rows:
            i = draw(st.integers(0, len(rows) - 1))
            rows[i] = draw(st.one_of(number_text, free_text, st.builds(lambda a, b: f"{a} {b}", number_text,
                                                                         number_text)))
    sep = draw(st.sampled_from(["\n", "\r\n"]))
    return sep.join([*header, marker, *rows]) + sep


@settings(FUZZ, max_examples=EXAMPLES["data_files"])
@given(text=data_text(), latin1=st.booleans())
def test_data_files(ws, text, latin1):
    """A data file as `motex init` reads it (the same reader `motex run` uses); on success the written
    campaign file loads and holds only finite numbers."""
    (ws / "d.gr").write_bytes(text.encode("latin-1" if latin1 else "utf-8", errors="replace"))
    try:
        rc, stdout = fuzz_run(["init", "tiny.xyz", "d.gr", "-o", "new.yaml"], ws,
                                   outputs=("new.yaml",))
        if rc == 0:
            assert stdout.strip() == "new.yaml"
            doc = yaml.safe_load((ws / "new.yaml").read_text())
            numbers = [v for section in ("fit", "catalogue") for v in doc[section].values()
                       if isinstance(v, float)] + [doc["threshold"]]
            assert all(math.isfinite(v) for v in numbers), doc
    finally:
        cleanup(ws, "new.yaml", "d.gr")


# ------------------------------------------------------------------------------ campaign files

yaml_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(allow_nan=True, allow_infinity=True),
              free_text, st.sampled_from(["1e-3", ".nan", ".inf", "-.inf", "2.5 Å", "~", "[W]", "model.xyz",
                                          "data.gr", "results", "local", "uniform-size", "exhaustive"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(free_text, inner, max_size=3)),
    max_leaves=6)


def _paths(doc: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in doc.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += _paths(value, (*prefix, key))
    return out


@st.composite
def mutated_yaml(draw, base: dict) -> str:
    """`base` with a few keys set to generated values, removed, or added; sometimes raw text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(free_text, st.sampled_from(["", "- a\n- b\n", "a: [1,\n", "\t", "x: 1\nx: 2\n"])))
    doc = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc) or [("x",)]))
        parent = doc
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent.get(key), dict) else {}
        action = draw(st.sampled_from(["set", "set", "set", "drop", "add"]))
        if action == "set":
            parent[path[-1]] = draw(yaml_value)
        elif action == "drop":
            parent.pop(path[-1], None)
        else:
            parent[draw(st.sampled_from(["catalouge", "rmax", "extra", "qdmap", "zoom"]))] = draw(yaml_value)
    return yaml.safe_dump(doc, allow_unicode=True)


CAMPAIGN = {"structure": "model.xyz", "data": "data.gr", "permute": ["C"], "output": "results",
            "threshold": 2.0, "cluster": "local",
            "catalogue": {"size": 300, "chunk_size": 100, "seed": 7, "strategy": "uniform-size",
                          "keep_probability": 0.5},
            "fit": {"engine": "batched", "calculator": "motex", "rmin": 1.0, "rmax": 8.0, "qmin": 0.7,
                    "qmax": 20.0, "qdamp": 0.04, "qbroad": 0.01, "radiation": "xray",
                    "zoom": {"refine": True, "start": 1.0, "min": 0.97, "max": 1.03},
                    "uiso": {"refine": True, "start": 0.005, "min": 0.001, "max": 0.05}},
            "learn": {"test_fraction": 0.2, "n_trials": 4, "bootstrap": 10}}


@settings(FUZZ, max_examples=EXAMPLES["campaign_files"])
@given(text=mutated_yaml(CAMPAIGN))
def test_campaign_files(ws, text):
    """`motex run --dry-run` reads and checks every input of a real run, then starts nothing."""
    (ws / "c.yaml").write_text(text)
    try:
        fuzz_run(["run", "c.yaml", "--dry-run"], ws, outputs=("c.yaml",))
    finally:
        cleanup(ws, "c.yaml")


# ---------------------------------------------------------------------------- cluster profiles

PROFILES = {
    "slurm": {"kind": "slurm", "description": "x",
              "jobqueue": {"cores": 4, "memory": "8GiB", "walltime": "01:00:00", "queue": "normal",
                           "processes": 2, "job-extra-directives": ["--exclusive"]},
              "fit": {"minimum-jobs": 0, "maximum-jobs": 4, "lifetime": "auto", "lifetime-stagger": "2m",
                      "lifetime-margin": "3m", "lifetime-restart": False},
              "learn": {"jobs": 1, "processes": 1, "walltime": "00:30:00", "wait-timeout": "10m"}},
    "local": {"kind": "local", "local": {"n-workers": 2, "threads-per-worker": 1, "memory-limit": "2GiB",
                                         "dashboard-address": ":0"}},
}


@settings(FUZZ, max_examples=EXAMPLES["cluster_profiles"])
@given(text=st.sampled_from(list(PROFILES)).flatmap(lambda k: mutated_yaml(PROFILES[k])),
       raw=st.binary(max_size=30), use_raw=st.integers(0, 9))
def test_cluster_profiles(ws, text, raw, use_raw):
    (ws / "p.yaml").write_bytes(raw if use_raw == 0 else text.encode())
    try:
        fuzz_run(["run", "campaign.yaml", "--dry-run", "--cluster", "p.yaml"], ws, outputs=("p.yaml",))
    finally:
        cleanup(ws, "p.yaml")


@pytest.mark.parametrize("fit, field", [
    ({"qmax": 1e300}, "fit.qmax"), ({"qdamp": float("inf")}, "fit.qdamp"), ({"rmax": 1e6}, "fit.rmax"),
    ({"zoom": {"refine": True, "start": 1.0, "min": 0.97, "max": 1e9}}, "fit.zoom.max"),
    ({"uiso": {"refine": True, "start": 0.005, "min": 0.001, "max": 1e300}}, "fit.uiso.max"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_campaign_settings_beyond_the_calculators_range_are_one_error_line(ws, fit, field):
    """The ranges of `motex pdf` hold for campaign files too: a fit never starts with a Q grid
    that cannot fit in memory or a NaN-making width."""
    (ws / "c.yaml").write_text(yaml.safe_dump({**CAMPAIGN, "fit": {**CAMPAIGN["fit"], **fit}}))
    try:
        rc, _ = run_and_check(["run", "c.yaml", "--dry-run"], ws)
        assert rc == 2
        _, _, err = invoke(["run", "c.yaml", "--dry-run"], ws)
        assert f"field '{field}'" in err, err
    finally:
        cleanup(ws, "c.yaml")


def test_non_utf8_cluster_profile_is_one_error_line(ws):
    (ws / "p.yaml").write_bytes("kind: slurm  # é\n".encode("latin-1"))
    try:
        rc, _ = run_and_check(["run", "campaign.yaml", "--dry-run", "--cluster", "p.yaml"], ws)
        assert rc == 2
    finally:
        cleanup(ws, "p.yaml")


def test_data_file_with_header_lines_before_its_start_marker(ws):
    """PDFgetX3 writes numeric settings lines above `#### start data`: they are header, not data."""
    lines = (ws / "data.gr").read_text().splitlines()
    numbers = [line for line in lines if not line.startswith("#")]
    header = ["[DEFAULT]", *(f"{i} {i + 1}" for i in range(8)), "qmax = 20.0", "#### start data", "#L r G"]
    (ws / "d.gr").write_text("\n".join(header + numbers) + "\n")
    try:
        rc, _ = run_and_check(["init", "tiny.xyz", "d.gr", "-o", "new.yaml"], ws, outputs=("new.yaml",))
        assert rc == 0
        assert "qmax: 20.0" in (ws / "new.yaml").read_text()
    finally:
        cleanup(ws, "new.yaml", "d.gr")


# ----------------------------------------------------------------------------------- lock files

LOCK = {"host": "node1", "pid": 12345, "pid_start": 1.7e9, "started": 1.7e9, "heartbeat": 1.7e9, "token": "ab12"}


@settings(FUZZ, max_examples=EXAMPLES["lock_files"])
@given(text=mutated_yaml(LOCK), as_json=st.booleans(), raw=st.binary(max_size=30), use_raw=st.integers(0, 9))
def test_lock_files(planted_store, text, as_json, raw, use_raw):
    """Whatever a lock file holds (torn by a kill, written by hand, a field missing), `motex status`
    reports the store and changes nothing."""
    store = Path(planted_store.path)
    try:
        as_json = as_json and json.dumps(yaml.safe_load(text), default=str)
    except yaml.YAMLError:
        as_json = False
    content = raw if use_raw == 0 else as_json.encode() if as_json else text.encode()
    (store / LOCK_KEY).write_bytes(content)
    try:
        rc, stdout = fuzz_run(["status", str(store), "--json"], store)
        assert rc == 0
        assert json.loads(stdout)["running"] is None  # no live run holds it on this host
    finally:
        (store / LOCK_KEY).unlink()


#: How each command with a numeric option (besides `motex pdf`) is run cheaply for the fuzz; a numeric
#: option added to another command fails `test_every_numeric_option_is_fuzzed` until it is here.
NUMERIC_RUNS = {("submit", "--nodes"): ["submit", "campaign.yaml", "--cluster", "slurm-local", "-o", "s.sh"]}
#: Numeric options not fuzzed, and why.
NOT_FUZZED = {("stability", "--steps"): "every valid value trains XGBoost several times (minutes per case)"}


def test_every_numeric_option_is_fuzzed():
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    numeric = {(name, a.option_strings[-1]) for name, parser in sub.choices.items() for a in parser._actions
               if a.option_strings and a.type in (int, float) and name != "pdf"}
    assert numeric == set(NUMERIC_RUNS) | set(NOT_FUZZED)


@settings(FUZZ, max_examples=EXAMPLES["other_numbers"])
@given(case=st.sampled_from(sorted(NUMERIC_RUNS)), value=number_text)
def test_numeric_options_of_other_commands(ws, case, value):
    """Exit 0 (the script and whatever it needs written), or one error line and nothing changed."""
    before = snapshot(ws)
    rc, stdout, stderr = invoke([*NUMERIC_RUNS[case], f"{case[1]}={value}"], ws)
    event(f"exit {rc}")
    check_outcome(rc, stdout, stderr, [case, value])
    after = snapshot(ws)
    assert {k: v for k, v in after.items() if k in before} == before, (case, value)
    assert rc == 0 or after == before, (case, value)
    for name in sorted(set(after) - set(before), reverse=True):  # what a successful run wrote
        path = ws / name
        path.rmdir() if path.is_dir() else path.unlink()


def test_the_fuzz_runs_at_least_2000_cases():
    assert sum(EXAMPLES.values()) >= 2000, EXAMPLES


def test_init_threshold_keeps_the_whole_first_shell_of_a_polyoxometalate(tmp_path):
    """W–O bonds 1.71–1.97 Å and the μ4-O at 2.35 Å, the next W–O at 3.56 Å: the threshold falls in
    the gap, so every W keeps its central O (1.2 × the shortest bond, 2.05 Å, would drop it)."""
    from motex_dask.pdf import pdf_from_atoms, write_gr

    offsets = [(1.71, 0, 0), (0, 1.90, 0), (0, -1.97, 0), (-2.35, 0, 0)]  # terminal, bridging, μ4-O
    z = math.sqrt(3.56**2 - 1.71**2)  # the second W's terminal O is the next W–O distance, 3.56 Å
    lines = [f"W 0 0 {w * z:.6f}" for w in (0, 1)]
    lines += [f"O {x:.6f} {y:.6f} {w * z:.6f}" for w in (0, 1) for x, y, _ in offsets]
    (tmp_path / "pom.xyz").write_text(f"{len(lines)}\nW2O8\n" + "\n".join(lines) + "\n")
    symbols = [line.split()[0] for line in lines]
    positions = np.array([[float(v) for v in line.split()[1:]] for line in lines])
    r, g = pdf_from_atoms(symbols, positions, qmin=0.7, qmax=20, qdamp=0.04, qbroad=0.01, rmin=0.5, rmax=12,
                          rstep=0.01)
    write_gr(tmp_path / "pom.gr", r, g, {})
    rc, _ = run_and_check(["init", "pom.xyz", "pom.gr", "-o", "c.yaml"], tmp_path, outputs=("c.yaml",))
    assert rc == 0
    text = (tmp_path / "c.yaml").read_text()
    threshold = yaml.safe_load(text)["threshold"]
    assert 2.36 < threshold < 3.56, threshold
    assert "W–other 1.71–2.35 Å" in text and "next W–other distance (3.56 Å)" in text, text


# ------------------------------------------------------------------------------ error taxonomy

def test_readme_and_help_list_every_exit_code():
    from motex_dask.errors import EXIT_CODES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rc, help_text, _ = invoke(["--help"], Path.cwd())
    assert rc == 0
    for code in EXIT_CODES:
        assert f"\n| {code} | " in readme, code
        assert f"  {code:>3}  " in help_text, code


def test_verbose_shows_the_traceback_behind_an_error(ws):
    rc, _, stderr = invoke(["-v", "pdf", "nope.xyz", "-o", "out.gr"], ws)
    assert rc == 2
    assert "Traceback" in stderr and "InputError" in stderr
    assert stderr.rstrip().splitlines()[-1] == "error: nope.xyz: structure file not found"


def test_ctrl_c_outside_a_campaign_claims_nothing_about_chunks(ws, monkeypatch):
    """Ctrl-C while `motex pdf` reads its structure (the interrupt raised where the user pressed it)."""
    import motex_dask.structure

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(motex_dask.structure, "read_structure", interrupted)
    rc, stdout, stderr = invoke(["pdf", "tiny.xyz", "-o", "out.gr"], ws)
    assert (rc, stdout, stderr) == (130, "", "interrupted: nothing was written\n")
    assert not (ws / "out.gr").exists()
