"""Structure files: real files read fine, broken ones get one clear error; the ligand rule."""

from __future__ import annotations

from pathlib import Path

import ase.build
import ase.io
import numpy as np
import pytest

from motex_dask.errors import InputError
from motex_dask.structure import build_model, load_model, read_structure

GA2O3 = Path(__file__).resolve().parent / "data" / "ga2o3"


def test_the_real_ga2o3_models_read_fine():
    # GO_1x2x2.xyz has a 5th column of zeros and a bare comment line.
    go = read_structure(GA2O3 / "GO_1x2x2.xyz")
    assert go.get_chemical_formula() == "Ga32O48"
    beta = read_structure(GA2O3 / "beta-Ga2O3_CollCode83645_1x2x2.xyz")
    assert beta.get_chemical_formula() == "Ga40O102"
    model = load_model(GA2O3 / "GO_1x2x2.xyz", ("Ga",), 2.2)
    assert model.n_perm == 32 and model.n_atoms == 80
    assert list(np.unique(model.symbols[model.permuted])) == ["Ga"]


@pytest.mark.parametrize("fmt", ["xyz", "extxyz", "cif", "pdb"])
def test_formats_ase_reads(tmp_path, fmt):
    atoms = ase.build.bulk("NaCl", "rocksalt", a=5.64).repeat(2)
    path = tmp_path / f"nacl.{fmt}"
    ase.io.write(path, atoms)  # the format from the extension, as a user's file would be
    assert read_structure(path).get_chemical_formula() == atoms.get_chemical_formula()


XYZ_OK = "3\ncomment\nC 0 0 0\nC 1.4 0 0\nC 2.8 0 0\n"

BAD_STRUCTURES = {
    "empty.xyz": ("", "structure file is empty"),
    "binary.xyz": (b"\x00\x01\x02\xff\xfe", "not a text structure file"),
    "typo.xyz": (XYZ_OK.replace("C 1.4", "Xx 1.4"), "line 4: unknown element symbol 'Xx'"),
    "label.xyz": (XYZ_OK.replace("C 2.8", "C1 2.8"), "line 5: unknown element symbol 'C1'"),
    "short.xyz": (XYZ_OK.replace("3\n", "4\n", 1), "cannot read it as a structure"),
    "letters.xyz": (XYZ_OK.replace("2.8 0 0", "2.8 0 zero"), "cannot read it as a structure"),
    "overlap.xyz": (XYZ_OK.replace("C 2.8 0 0", "C 1.5 0 0"), "atoms 1 and 2 overlap (0.100 Å apart"),
    "nan.xyz": (XYZ_OK.replace("2.8 0 0", "nan 0 0"), "not finite numbers"),
    "no_atoms.xyz": ("0\ncomment\n", "no atoms"),
    "model.foo": (XYZ_OK, "unknown structure file format '.foo'"),
    "no_structure.cif": ("data_x\n_cell_length_a 5\n", "no structure found in it"),
}


@pytest.mark.parametrize("name", sorted(BAD_STRUCTURES))
def test_broken_structures_get_one_clear_error(tmp_path, name):
    text, expected = BAD_STRUCTURES[name]
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InputError) as err:
        read_structure(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message, message
    assert "\n" not in message


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="structure file not found"):
        read_structure(tmp_path / "nope.xyz")
    with pytest.raises(InputError, match="is a folder"):
        read_structure(tmp_path)


def test_permuted_elements_must_be_there_and_several(tmp_path):
    atoms = read_structure(GA2O3 / "GO_1x2x2.xyz")
    with pytest.raises(InputError, match="no atom of element 'W' to permute; elements present: Ga, O"):
        build_model(atoms, ("W",), 2.2, source="GO.xyz")
    lone = ase.Atoms("WO3", positions=[[0, 0, 0], [1.9, 0, 0], [0, 1.9, 0], [0, 0, 1.9]])
    with pytest.raises(InputError, match="only one atom of W to permute"):
        build_model(lone, ("W",), 2.2)


def test_ligand_rule_keeps_others_near_kept_permuted_atoms():
    # W0 at x=0 with O at 1.9; W1 at x=6 with O at 7.9; an O at 4 Å from W1 belongs to nobody at 2.2 Å.
    atoms = ase.Atoms("WOWOO", positions=[[0, 0, 0], [1.9, 0, 0], [6, 0, 0], [7.9, 0, 0], [10, 0, 0]])
    model = build_model(atoms, ("W",), 2.2)
    assert list(model.permuted) == [0, 2]
    keep = model.keep_atoms(np.array([[True, False], [False, True], [True, True]]))
    assert keep.tolist() == [[True, True, False, False, False],
                             [False, False, True, True, False],
                             [True, True, True, True, False]]
    assert model.motif_size(np.array([[True, True]])).tolist() == [4]
