"""Scattering factors from maintained packages (no hand-typed tables).

X-ray: Waasmaier–Kirfel f0 from xraydb, evaluated at s = sinθ/λ = Q/(4π), the same
coefficients srreal's default ``xray`` table uses. Neutron: coherent scattering length
b_c (fm) from periodictable, independent of Q.
"""

from __future__ import annotations

import numpy as np

RADIATIONS = ("xray", "neutron")


def scattering_factors(elements: list[str] | tuple[str, ...], q: np.ndarray, radiation: str = "xray") -> np.ndarray:
    """f_el(Q) for each element on the Q grid `q` (Å⁻¹): shape (len(elements), len(q))."""
    q = np.asarray(q, dtype=float)
    out = np.empty((len(elements), q.size))
    for row, el in enumerate(elements):
        if radiation == "xray":
            import xraydb

            try:
                out[row] = xraydb.f0(el, q / (4.0 * np.pi))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"no X-ray form factor for element {el!r}") from exc
        elif radiation == "neutron":
            out[row] = neutron_length(el)
        else:
            raise ValueError(f"radiation must be one of {RADIATIONS} (got {radiation!r})")
    return out


def missing_factors(elements, radiation: str = "xray") -> list[str]:
    """The elements among `elements` that have no scattering factor for `radiation` (e.g. Og, or Tc
    for neutrons): a structure holding them cannot be calculated."""
    missing = []
    for el in dict.fromkeys(str(e) for e in elements):
        try:
            scattering_factors([el], np.zeros(1), radiation)
        except ValueError:
            missing.append(el)
    return missing


def neutron_length(element: str) -> float:
    """Coherent neutron scattering length b_c of `element` in fm (periodictable)."""
    import periodictable

    try:
        b = periodictable.elements.symbol(element).neutron.b_c
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"no neutron scattering length for element {element!r}") from exc
    if b is None or not np.isfinite(b):
        raise ValueError(f"no neutron scattering length for element {element!r}")
    return float(b)
