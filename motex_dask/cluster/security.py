"""Per-run TLS credentials for Dask on batch clusters, written where only the owner can read them."""

from __future__ import annotations

from pathlib import Path

from distributed.security import Security

from ..errors import InputError

_CREDENTIAL_FILES = {"ca_file": "ca.pem", "cert": "cert.pem", "key": "key.pem"}


def write_credentials(folder: Path) -> Security:
    """Make a run's TLS credentials and write them to ``folder`` (readable by the owner only)."""
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    config = Security.temporary().get_tls_config_for_role("client")
    for key, name in _CREDENTIAL_FILES.items():
        path = folder / name
        path.touch(mode=0o600)
        path.write_text(config[key])
    return read_credentials(folder)


def read_credentials(folder: Path) -> Security:
    """The Security of credentials written by `write_credentials`: every role, TLS required."""
    files = {key: str(Path(folder) / name) for key, name in _CREDENTIAL_FILES.items()}
    missing = [f for f in files.values() if not Path(f).is_file()]
    if missing:
        raise InputError(f"{folder}: TLS credentials missing ({', '.join(missing)}); write the batch script "
                         "again with `motex submit`")
    roles = {f"tls_{role}_{part}": files[part] for role in ("scheduler", "worker", "client") for part in ("cert", "key")}
    return Security(tls_ca_file=files["ca_file"], require_encryption=True, **roles)
