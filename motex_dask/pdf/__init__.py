"""X-ray/neutron scattering factors and the srreal-faithful Debye PDF calculator."""

from motex_dask.pdf.calculator import (
    Instrument,
    PairTable,
    QGrid,
    check_settings,
    pdf_from_atoms,
    r_grid,
    structure_function,
    transform_matrix,
    write_gr,
)
from motex_dask.pdf.formfactors import missing_factors, scattering_factors

__all__ = ["Instrument", "PairTable", "QGrid", "check_settings", "pdf_from_atoms", "missing_factors", "r_grid", "scattering_factors",
           "structure_function", "transform_matrix", "write_gr"]
