"""Campaign files: every mistake a person makes gets one error naming the field; `motex init`."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
import yaml

from motex_dask.campaign_file import load_campaign, parse_campaign
from motex_dask.init_template import FIELD_HELP, write_campaign_template
from motex_dask.settings import Campaign, ParamSpec
from motex_dask.errors import InputError

GA2O3 = Path(__file__).resolve().parent / "data" / "ga2o3"
README = Path(__file__).resolve().parents[1] / "README.md"
BASE = f"""structure: {GA2O3}/GO_1x2x2.xyz
data: {GA2O3}/amorphousFit_Gobs.dat
permute: [Ga]
output: results
"""


def load(tmp_path: Path, extra: str, base: str = BASE) -> Campaign:
    path = tmp_path / "campaign.yaml"
    path.write_text(base + extra)
    return load_campaign(path)


def test_minimal_campaign_and_relative_paths(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("GO_1x2x2.xyz", "amorphousFit_Gobs.dat"):
        (tmp_path / "in" / name).write_bytes((GA2O3 / name).read_bytes())
    c = load(tmp_path, "", base="structure: in/GO_1x2x2.xyz\ndata: in/amorphousFit_Gobs.dat\npermute: Ga\n"
                               "output: out\n")
    assert c.structure == tmp_path / "in" / "GO_1x2x2.xyz" and c.output == tmp_path / "out"
    assert c.permute == ("Ga",) and c.store_path == str(tmp_path / "out" / "store.zarr")
    assert c.fit == type(c.fit)() and c.catalogue.size == 20000


def test_people_s_yaml_numbers_and_partial_parameters(tmp_path):
    c = load(tmp_path, "fit:\n  qdamp: 4e-2\n  zoom: {start: 1.01}\n  uiso: {refine: false}\n"
                       "catalogue: {size: 2e4}\n")
    assert c.fit.qdamp == 0.04 and isinstance(c.catalogue.size, int) and c.catalogue.size == 20000
    # Keys left out of zoom/uiso keep their defaults, not ParamSpec's unbounded ones.
    assert c.fit.zoom == ParamSpec(True, 1.01, 0.97, 1.03)
    assert c.fit.uiso == ParamSpec(False, 0.005, 0.001, 0.05)


BAD = {
    "misspelt top key": ("catalouge: {size: 5}\n", "field 'catalouge': unknown key; did you mean 'catalogue'?"),
    "misspelt nested key": ("fit: {rmn: 1.0}\n", "field 'fit.rmn': unknown key; did you mean 'fit.rmin'?"),
    "key in the wrong section": ("rmax: 8\n", "field 'rmax': unknown key; did you mean 'fit.rmax'?"),
    "unknown key, no close match": ("xyzzy: 1\n", "field 'xyzzy': unknown key; known keys: structure"),
    "wrong type": ("threshold: two\n", "field 'threshold': must be a number (got 'two')"),
    "bool for a number": ("fit: {qmax: yes}\n", "field 'fit.qmax': must be a number (got True)"),
    "fraction for a count": ("catalogue: {size: 2.5}\n", "field 'catalogue.size': must be a whole number"),
    "threshold zero": ("threshold: 0\n", "field 'threshold': must be a distance > 0 Å"),
    "threshold NaN": ("threshold: .nan\n", "field 'threshold': must be a number, not NaN"),
    "qmin above qmax": ("fit: {qmin: 25}\n", "field 'fit.qmin': must be below qmax"),
    "rmin above rmax": ("fit: {rmin: 12, rmax: 8}\n", "field 'fit.rmin': must be below rmax"),
    "negative rmin": ("fit: {rmin: -1}\n", "field 'fit.rmin': must be > 0"),
    "catalogue size zero": ("catalogue: {size: 0}\n", "field 'catalogue.size': must be a positive number"),
    "unknown strategy": ("catalogue: {strategy: exhaustiv}\n", "field 'catalogue.strategy': must be one of"),
    "keep probability 1": ("catalogue: {keep_probability: 1}\n", "field 'catalogue.keep_probability'"),
    "zoom min above max": ("fit: {zoom: {min: 1.1}}\n", "field 'fit.zoom.min': must be below max"),
    "zoom start outside": ("fit: {zoom: {start: 2}}\n", "field 'fit.zoom.start': must lie within"),
    "zoom as a number": ("fit: {zoom: 1.0}\n", "field 'fit.zoom': must be a mapping of keys such as "
                                               "{refine: true, start: 1.0, min: 0.97, max: 1.03}"),
    "section as a list": ("fit: [1, 2]\n", "field 'fit': must be a mapping"),
    "srreal without srfit": ("fit: {calculator: srreal}\n", "only available with engine: srfit"),
    "radiation": ("fit: {radiation: electrons}\n", "field 'fit.radiation': must be one of xray, neutron"),
    "learn fractions": ("learn: {test_fraction: 0.45, validation_fraction: 0.4}\n", "at least 20 %"),
    "cv folds": ("learn: {cv_folds: 1}\n", "field 'learn.cv_folds': must be >= 2"),
    "duplicated key": ("fit:\n  rmin: 1\n  rmin: 2\n", "key 'rmin' appears twice (lines 6 and 7)"),
    "tab": ("fit:\n\trmin: 1\n", "not valid YAML (line 6)"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_campaign_values(tmp_path, case):
    extra, expected = BAD[case]
    with pytest.raises(InputError) as err:
        load(tmp_path, extra)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'campaign.yaml'}: ") and expected in message, message
    assert "\n" not in message


@pytest.mark.parametrize("permute, expected", [
    ("[ga]", "field 'permute': 'ga' is not an element symbol; did you mean 'Ga'?"),
    ("[Gx]", "field 'permute': 'Gx' is not an element symbol"),
    ("[]", "field 'permute': name at least one element"),
    ("[Ga, Ga]", "field 'permute': lists an element twice"),
    ("[1]", "field 'permute': must be a list of element symbols"),
])
def test_bad_permute(tmp_path, permute, expected):
    with pytest.raises(InputError, match=re.escape(expected)):
        load(tmp_path, "", base=BASE.replace("permute: [Ga]", f"permute: {permute}"))


def test_missing_and_misplaced_files(tmp_path):
    with pytest.raises(InputError, match="field 'data' is required|field 'data': is required"):
        load(tmp_path, "", base=BASE.replace(f"data: {GA2O3}/amorphousFit_Gobs.dat\n", ""))
    with pytest.raises(InputError, match="field 'structure': file .*nope.xyz does not exist"):
        load(tmp_path, "", base=BASE.replace("GO_1x2x2.xyz", "nope.xyz"))
    with pytest.raises(InputError, match="field 'data': .* is a folder"):
        load(tmp_path, "", base=BASE.replace(f"{GA2O3}/amorphousFit_Gobs.dat", str(tmp_path)))
    (tmp_path / "results").write_text("not a folder")
    with pytest.raises(InputError, match="field 'output': .*results is a file"):
        load(tmp_path, "")
    with pytest.raises(InputError, match="campaign file not found"):
        load_campaign(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="is a folder"):
        load_campaign(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00x")
    with pytest.raises(InputError, match="not a text file"):
        load_campaign(tmp_path / "bin.yaml")
    for text in ("", "- a list\n", "just text\n"):
        (tmp_path / "odd.yaml").write_text(text)
        with pytest.raises(InputError, match="must be a YAML mapping of keys"):
            load_campaign(tmp_path / "odd.yaml")


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every campaign key, dotted, as written in a campaign file."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key = prefix + f.metadata.get("key", f.name)
        if dataclasses.is_dataclass(hints[f.name]) and hints[f.name] is not ParamSpec:
            keys += _all_keys(hints[f.name], key + ".")
        else:
            keys.append(key)
    return keys


def test_every_key_is_documented_here_and_in_the_readme():
    keys = _all_keys(Campaign)
    assert sorted(keys) == sorted(FIELD_HELP)
    readme = README.read_text()
    reference = readme[readme.index("## Campaign file reference"):]
    missing = [k for k in keys if f"`{k}`" not in reference]
    assert not missing, f"README's campaign file reference lacks {missing}"


# ------------------------------------------------------------------------------------- motex init

def test_init_writes_a_campaign_that_loads_as_written(tmp_path):
    out = write_campaign_template(GA2O3 / "GO_1x2x2.xyz", GA2O3 / "amorphousFit_Gobs.dat", None,
                                  tmp_path / "go.yaml")
    c = load_campaign(out)
    text = out.read_text()
    assert c.permute == ("Ga",)  # the heaviest element
    # Midway between the first Ga shell (Ga–O 1.83–2.07 Å) and the next Ga–O distance (3.28 Å)
    assert c.threshold == pytest.approx(2.67)
    assert "Ga–other 1.83–2.07 Å" in text and "(3.28 Å)" in text
    assert 0.79 <= c.fit.rmin < 1.83 and c.fit.rmax == 10.0
    assert c.structure == GA2O3 / "GO_1x2x2.xyz" and c.output == tmp_path / "results" / "GO_1x2x2"
    assert "CHECK" in text
    for key in set(FIELD_HELP) - {"threshold"}:  # every key is in the file, explained (threshold: how chosen)
        assert FIELD_HELP[key] in text, key
    # The plain-YAML view equals the loaded campaign: comments carry no settings.
    assert yaml.safe_load(text)["fit"]["rmin"] == c.fit.rmin


def test_init_reads_q_values_from_the_header_and_paths_stay_relative(tmp_path):
    (tmp_path / "data").mkdir()
    atoms = ase.Atoms("W2O2", positions=[[0, 0, 0], [4.0, 0, 0], [1.8, 0, 0], [5.8, 0, 0]])
    ase.io.write(tmp_path / "data" / "wo.xyz", atoms)
    r = np.round(np.arange(0.5, 30, 0.01), 2)
    (tmp_path / "data" / "wo.gr").write_text(
        "[DEFAULT]\nmode = neutron\nqmin = 0.9\nqmax = 23.5\n#### start data\n#L r G\n"
        + "\n".join(f"{a:.2f} {math.sin(a):.5f}" for a in r))
    out = write_campaign_template(tmp_path / "data" / "wo.xyz", tmp_path / "data" / "wo.gr", ["W"],
                                  tmp_path / "wo.yaml")
    c = load_campaign(out)
    assert (c.fit.qmin, c.fit.qmax, c.fit.radiation) == (0.9, 23.5, "neutron")
    assert "structure: data/wo.xyz" in out.read_text()
    assert c.threshold == pytest.approx(1.2 * 2.2)  # W–O 1.8 and 2.2 Å, nothing more within 4.5 Å
    assert c.catalogue.strategy == "exhaustive" and c.catalogue.size == 3  # 2 W: every subset
    assert c.fit.rmin >= 0.5


def test_init_refuses_to_overwrite_and_writes_nothing_on_bad_input(tmp_path):
    existing = tmp_path / "campaign.yaml"
    existing.write_text("# my own campaign\n")
    with pytest.raises(InputError, match="already exists"):
        write_campaign_template(GA2O3 / "GO_1x2x2.xyz", GA2O3 / "amorphousFit_Gobs.dat", None, existing)
    assert existing.read_text() == "# my own campaign\n"
    for permute, expected in ((["ga"], "did you mean 'Ga'"), (["W"], "no atom of element 'W'")):
        with pytest.raises(InputError, match=expected):
            write_campaign_template(GA2O3 / "GO_1x2x2.xyz", GA2O3 / "amorphousFit_Gobs.dat", permute,
                                    tmp_path / "new.yaml")
    short = tmp_path / "short.gr"
    short.write_text("\n".join(f"{a:.2f} 1.0" for a in np.arange(0.5, 1.2, 0.01)))
    with pytest.raises(InputError, match="data cover only r"):
        write_campaign_template(GA2O3 / "GO_1x2x2.xyz", short, None, tmp_path / "new.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["campaign.yaml", "short.gr"]


def test_parse_campaign_names_the_file_for_stored_settings(tmp_path):
    with pytest.raises(InputError, match=r"^store.zarr \(stored settings\): a campaign file must be"):
        parse_campaign(["not", "a", "mapping"], Path("store.zarr (stored settings)"))
