"""motex_dask: ML-MotEx motif extraction from PDF data as a Dask task graph."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("motex_dask")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
