"""The starting model: any structure file ase reads, the permuted atoms and the ligand rule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ase
import ase.io
import numpy as np
from ase.data import chemical_symbols
from ase.io.formats import UnknownFileTypeError
from scipy.spatial import cKDTree

from .errors import InputError
from .pdf import missing_factors

#: Two atoms closer than this (Å) are almost certainly a duplicated site, not chemistry.
MIN_SEPARATION = 0.5


def _ase_error(path: Path, err: Exception) -> str:
    """What went wrong when ase could not read a file, in words a user can act on."""
    if isinstance(err, KeyError):  # ase looks each symbol up in a table: a typo or a site label
        symbol = str(err.args[0]) if err.args else "?"
        lineno = next((i for i, line in enumerate(path.read_text(errors="replace").splitlines(), start=1)
                       if symbol in line.split()), None)
        where = f"line {lineno}: " if lineno else ""
        return f"{where}unknown element symbol {symbol!r}; use true element symbols (e.g. Ga, O; not Ga1 or Xx)"
    if isinstance(err, UnicodeDecodeError):
        return "not a text structure file; give xyz, cif, pdb or another format ase reads"
    if isinstance(err, UnknownFileTypeError):
        return (f"unknown structure file format {path.suffix or '(no extension)'!r}; "
                "use a file ase reads (.xyz, .cif, .pdb, …)")
    if isinstance(err, OSError) and err.errno is not None:  # ase's own XYZError is an OSError too
        return f"cannot read the structure file ({err.strerror})"
    reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if not reason:
        return "no structure found in it; give a file ase can read (xyz, cif, pdb, …)"
    return f"cannot read it as a structure ({reason}); give a file ase can read (xyz, cif, pdb, …)"


def read_structure(path: str | Path) -> ase.Atoms:
    """Read a structure with ase.io (xyz, extxyz, cif, pdb, …) and check it is usable."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the structure file itself")
    if not path.is_file():
        raise InputError(f"{path}: structure file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: structure file is empty")
    try:
        atoms = ase.io.read(path)
    except Exception as err:  # ase raises many types (ValueError, KeyError, StopIteration…)
        raise InputError(f"{path}: {_ase_error(path, err)}") from None
    if isinstance(atoms, list):  # some readers return a list for multi-frame files
        atoms = atoms[-1]
    if len(atoms) == 0:
        raise InputError(f"{path}: the structure has no atoms")
    bad = [s for s in atoms.get_chemical_symbols() if s not in chemical_symbols[1:]]
    if bad:
        raise InputError(f"{path}: unknown element symbol {bad[0]!r}; use true element symbols (e.g. W, O)")
    positions = atoms.get_positions()
    if not np.all(np.isfinite(positions)):
        raise InputError(f"{path}: some coordinates are not finite numbers")
    if len(atoms) > 1:
        dist, idx = cKDTree(positions).query(positions, k=2)
        i = int(np.argmin(dist[:, 1]))
        if dist[i, 1] < MIN_SEPARATION:
            j = int(idx[i, 1])
            raise InputError(f"{path}: atoms {min(i, j)} and {max(i, j)} overlap "
                             f"({dist[i, 1]:.3f} Å apart, under {MIN_SEPARATION} Å); remove the duplicate site")
    return atoms


def nearest_neighbour_distance(positions: np.ndarray) -> float:
    """Median distance from each atom to its nearest neighbour (0 for fewer than two atoms)."""
    if len(positions) < 2:
        return 0.0
    dist, _ = cKDTree(positions).query(positions, k=2)
    return float(np.median(dist[:, 1]))


@dataclass(frozen=True)
class StartingModel:
    """Atoms of the starting model, the permuted subset and which other atoms each one carries."""

    symbols: np.ndarray
    positions: np.ndarray
    permuted: np.ndarray
    ligand_of: np.ndarray

    @property
    def n_atoms(self) -> int:
        return len(self.symbols)

    @property
    def n_perm(self) -> int:
        return len(self.permuted)

    @property
    def permuted_positions(self) -> np.ndarray:
        """(n_perm, 3) coordinates of the permuted atoms (what shape-cut catalogues cut)."""
        return self.positions[self.permuted]

    def keep_atoms(self, masks: np.ndarray) -> np.ndarray:
        """(n, n_perm) masks over permuted atoms → (n, n_atoms) masks over all atoms.

        A non-permuted atom is kept when at least one kept permuted atom lies within the threshold.
        """
        masks = np.asarray(masks, dtype=bool)
        keep = (masks.astype(np.float32) @ self.ligand_of.T.astype(np.float32)) > 0
        keep[:, self.permuted] = masks
        return keep

    def motif_size(self, masks: np.ndarray) -> np.ndarray:
        """Number of atoms in each candidate motif (permuted atoms kept + their ligands)."""
        return self.keep_atoms(masks).sum(axis=1).astype(np.int32)


def build_model(atoms: ase.Atoms, permute: tuple[str, ...], threshold: float,
                source: str = "structure") -> StartingModel:
    """Select the permuted atoms and precompute the ligand rule (distance ≤ threshold)."""
    symbols = np.array(atoms.get_chemical_symbols())
    present = sorted(set(symbols))
    for element in permute:
        if element not in present:
            raise InputError(f"{source}: no atom of element {element!r} to permute; "
                             f"elements present: {', '.join(present)}")
    is_perm = np.isin(symbols, permute)
    permuted = np.flatnonzero(is_perm).astype(np.int64)
    if len(permuted) < 2:
        raise InputError(f"{source}: only one atom of {', '.join(permute)} to permute; ML-MotEx needs "
                         "several (permute another element too, or use a larger starting model)")
    positions = atoms.get_positions().astype(np.float64)
    dist = np.linalg.norm(positions[:, None, :] - positions[None, permuted, :], axis=-1)
    ligand_of = (dist <= threshold) & ~is_perm[:, None]
    return StartingModel(symbols=symbols, positions=positions, permuted=permuted, ligand_of=ligand_of)


def check_radiation(atoms: ase.Atoms, radiation: str, source: str) -> None:
    """Every element of the structure must scatter the chosen radiation (have a form factor)."""
    missing = missing_factors(atoms.get_chemical_symbols(), radiation)
    if missing:
        other = "neutron" if radiation == "xray" else "xray"
        raise InputError(f"{source}: no {radiation} scattering factor for {', '.join(missing)}; "
                         f"use the {other} radiation or replace those atoms")


def load_model(path: str | Path, permute: tuple[str, ...], threshold: float,
               radiation: str = "xray") -> StartingModel:
    """Read a structure file and build the starting model for a campaign."""
    atoms = read_structure(path)
    check_radiation(atoms, radiation, str(path))
    return build_model(atoms, permute, threshold, source=str(path))
