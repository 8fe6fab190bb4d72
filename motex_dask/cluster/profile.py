"""Cluster profiles: find, read and validate ``cluster_profiles/NAME.yaml`` (errors name the key and the fix).

Defaults come from ``motex_dask/cluster.yaml``, overridden by the user's dask config (files,
``DASK_MOTEX__CLUSTER__...`` variables), overridden by the profile file. They are read when a profile
is loaded; nothing is registered with dask.config on import.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import yaml
from dask.utils import parse_bytes, parse_timedelta

from ..errors import InputError
from .jobqueue import BATCH_KINDS, jobqueue, jobqueue_value

KINDS = ("local", *BATCH_KINDS)
STAGES = ("fit", "learn")
# The sections each kind's profile may have.
_SECTIONS = {"local": ("local",), **{kind: ("tls", "jobqueue", "fit", "learn") for kind in BATCH_KINDS}}
# dask-jobqueue keys that are deprecated spellings of others.
_DEPRECATED = ("extra", "env-extra", "job-extra")
_WALLTIME = re.compile(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})")
_PACKAGE = Path(__file__).resolve().parents[1]
_PACKAGED_DIRS = (_PACKAGE / "cluster_profiles", _PACKAGE.parent / "cluster_profiles")
_DEFAULTS = _PACKAGE / "cluster.yaml"


@functools.cache
def _file_defaults() -> dict[str, Any]:
    return yaml.safe_load(_DEFAULTS.read_text(encoding="utf-8"))["motex"]["cluster"]


def setting(name: str) -> Any:
    """``motex.cluster.<name>``: cluster.yaml's default, overridden by the user's dask config."""
    default = _file_defaults()[name]
    given = dask.config.get(f"motex.cluster.{name}", default=None)
    if isinstance(default, dict):  # sections merge key by key; dask may spell keys with _ or -
        return {**default, **{str(k).replace("_", "-"): v for k, v in (given or {}).items()}}
    return default if given is None else given


@dataclass(frozen=True)
class ClusterProfile:
    """A validated cluster profile.

    ``options``: for ``local`` the resolved LocalCluster settings; for batch kinds the
    ``jobqueue.<kind>`` keys the profile sets (dask-jobqueue fills the rest from its own config).
    ``fit``/``learn``: batch kinds only, resolved (durations in seconds).
    ``tls``: batch kinds only; Dask traffic encrypted and authenticated with per-run credentials.
    """

    name: str
    kind: str
    options: Mapping[str, Any]
    fit: Mapping[str, Any] = field(default_factory=dict)
    learn: Mapping[str, Any] = field(default_factory=dict)
    source: Path | None = None
    tls: bool = False


def load_profile(name_or_path: str | Path, base_dir: Path | None = None) -> ClusterProfile:
    """Find and validate a profile: a path to a YAML file, or NAME looked up as NAME.yaml in
    ``base_dir/cluster_profiles``, ``./cluster_profiles``, then the packaged profiles."""
    path = _find_profile(str(name_or_path), base_dir)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file; a cluster profile is YAML text") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read the cluster profile ({err.strerror})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise InputError(f"{path}: not valid YAML{line}: {getattr(err, 'problem', err)}") from None
    return _parse_profile(raw, path)


def _find_profile(name: str, base_dir: Path | None) -> Path:
    given = Path(name).expanduser()
    if given.suffix in (".yaml", ".yml") or len(given.parts) > 1:
        if not given.is_file():
            raise InputError(f"cluster profile {given}: file not found")
        return given
    dirs = [d for d in (base_dir and Path(base_dir) / "cluster_profiles", Path.cwd() / "cluster_profiles",
                        *_PACKAGED_DIRS) if d]
    for d in dirs:
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    raise InputError(f"cluster profile '{name}' not found (looked for {name}.yaml in "
                     f"{', '.join(str(d) for d in dict.fromkeys(dirs))}); known profiles: {', '.join(known) or 'none'}")


def _parse_profile(raw: Any, path: Path) -> ClusterProfile:
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a cluster profile must be a YAML mapping with a 'kind' key")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise InputError(f"{path}: 'kind' must be one of {', '.join(KINDS)} (got {kind!r})")
    _check_keys(raw, ("kind", "description", *_SECTIONS[kind]), path, "")
    if kind == "local":
        return ClusterProfile(path.stem, kind, _resolve_local(raw, path), source=path)
    options = _section(raw, "jobqueue", _jobqueue_keys(kind), path)
    tls = raw.get("tls", setting("tls"))
    if not isinstance(tls, bool):
        raise InputError(f"{path}: 'tls' must be true (encrypt and authenticate Dask traffic with per-run "
                         f"credentials) or false (plain TCP, for a network only you can reach); got {tls!r}")
    if not tls and jobqueue_value(ClusterProfile(path.stem, kind, options), "protocol") == "tls://":
        raise InputError(f"{path}: 'jobqueue.protocol' is tls:// but 'tls' is false; drop one of them")
    profile = ClusterProfile(path.stem, kind, options, source=path, tls=tls)
    for key in ("cores", "memory"):
        if jobqueue_value(profile, key) is None:
            raise InputError(f"{path}: 'jobqueue.{key}' is required: the {key} of one {kind} job")
    cores = jobqueue_value(profile, "cores")
    if not isinstance(cores, int) or cores < 1:
        raise InputError(f"{path}: 'jobqueue.cores' must be a whole number >= 1 (got {cores!r})")
    _parse(parse_bytes, jobqueue_value(profile, "memory"), path, "jobqueue.memory", "a size such as 16GiB")
    processes = jobqueue_value(profile, "processes")
    if processes is not None and (not isinstance(processes, int) or not 1 <= processes <= cores):
        raise InputError(f"{path}: 'jobqueue.processes' must be a whole number from 1 to cores={cores} (got {processes!r})")
    walltime = _walltime_seconds(jobqueue_value(profile, "walltime"), path, "jobqueue.walltime")
    fit = _resolve_fit(_merged(raw, "fit", path), walltime, path)
    learn = _resolve_learn(_merged(raw, "learn", path), cores, path)
    return ClusterProfile(path.stem, kind, options, fit, learn, path, tls)


def _resolve_local(raw: dict, path: Path) -> dict[str, Any]:
    opts = _merged(raw, "local", path)
    n, threads = opts["n-workers"], opts["threads-per-worker"]
    if n is not None and (not isinstance(n, int) or n < 1):
        raise InputError(f"{path}: 'local.n-workers' must be a whole number >= 1 or null for one per CPU (got {n!r})")
    if not isinstance(threads, int) or threads < 1:
        raise InputError(f"{path}: 'local.threads-per-worker' must be a whole number >= 1 (got {threads!r})")
    if opts["memory-limit"] != "auto":
        _parse(parse_bytes, opts["memory-limit"], path, "local.memory-limit", "a size such as 4GiB, or auto")
    return opts


def _resolve_fit(fit: dict[str, Any], walltime: float | None, path: Path) -> dict[str, Any]:
    lo, hi = fit["minimum-jobs"], fit["maximum-jobs"]
    if not isinstance(lo, int) or not isinstance(hi, int) or not 0 <= lo <= hi or hi < 1:
        raise InputError(f"{path}: 'fit.minimum-jobs' and 'fit.maximum-jobs' must be whole numbers with "
                         f"0 <= minimum-jobs <= maximum-jobs and maximum-jobs >= 1 (got {lo!r}, {hi!r})")
    stagger = _parse(parse_timedelta, fit["lifetime-stagger"], path, "fit.lifetime-stagger", "a duration such as 2m")
    margin = _parse(parse_timedelta, fit["lifetime-margin"], path, "fit.lifetime-margin", "a duration such as 3m")
    if fit["lifetime"] == "auto":
        lifetime = None if walltime is None else walltime - stagger - margin
        if lifetime is not None and lifetime <= 0:
            raise InputError(f"{path}: the walltime ({walltime:.0f} s) leaves no worker lifetime after "
                             f"fit.lifetime-stagger + fit.lifetime-margin ({stagger + margin:.0f} s); "
                             "lengthen the walltime or set fit.lifetime explicitly")
    else:
        lifetime = _parse(parse_timedelta, fit["lifetime"], path, "fit.lifetime", "a duration such as 55m, or auto")
        if lifetime <= stagger:
            raise InputError(f"{path}: 'fit.lifetime' must be longer than fit.lifetime-stagger (got {lifetime:.0f} s)")
        if walltime is not None and lifetime + stagger >= walltime:
            raise InputError(f"{path}: fit.lifetime + fit.lifetime-stagger ({lifetime + stagger:.0f} s) must be "
                             f"shorter than the walltime ({walltime:.0f} s), so workers retire before the "
                             "batch system kills their job")
    if not isinstance(fit["lifetime-restart"], bool):
        raise InputError(f"{path}: 'fit.lifetime-restart' must be true or false")
    return {"minimum-jobs": lo, "maximum-jobs": hi, "lifetime": lifetime, "lifetime-stagger": stagger,
            "lifetime-restart": fit["lifetime-restart"]}


def _resolve_learn(learn: dict[str, Any], cores: int, path: Path) -> dict[str, Any]:
    jobs, processes = learn["jobs"], learn["processes"]
    if not isinstance(jobs, int) or jobs < 1:
        raise InputError(f"{path}: 'learn.jobs' must be a whole number >= 1 (got {jobs!r})")
    if not isinstance(processes, int) or not 1 <= processes <= cores:
        raise InputError(f"{path}: 'learn.processes' must be a whole number from 1 to cores={cores} (got {processes!r})")
    _walltime_seconds(learn["walltime"], path, "learn.walltime")
    wait = _parse(parse_timedelta, learn["wait-timeout"], path, "learn.wait-timeout", "a duration such as 10m")
    return {"jobs": jobs, "processes": processes, "walltime": learn["walltime"], "wait-timeout": wait}


def _jobqueue_keys(kind: str) -> list[str]:
    jobqueue()  # registers dask-jobqueue's config
    keys = [k.replace("_", "-") for k in dask.config.get(f"jobqueue.{kind}")]
    # Where `account` exists, `project` is its deprecated spelling (SGE's -P project is not).
    deprecated = (*_DEPRECATED, "project") if "account" in keys else _DEPRECATED
    return [k for k in keys if k not in deprecated]


def _check_keys(mapping: dict, allowed: tuple[str, ...] | list[str], path: Path, prefix: str) -> None:
    for key in mapping:
        if str(key).replace("_", "-") not in allowed:
            close = difflib.get_close_matches(str(key).replace("_", "-"), list(allowed), n=1)
            hint = f"did you mean '{prefix}{close[0]}'?" if close else f"known keys: {', '.join(allowed)}"
            raise InputError(f"{path}: unknown key '{prefix}{key}'; {hint}")


def _section(raw: dict, name: str, allowed: list[str], path: Path) -> dict[str, Any]:
    """One section of the profile with canonical (hyphenated) keys; unknown keys are errors."""
    section = raw.get(name) or {}
    if not isinstance(section, dict):
        raise InputError(f"{path}: '{name}' must be a mapping of options (got {section!r})")
    _check_keys(section, allowed, path, f"{name}.")
    return {str(k).replace("_", "-"): v for k, v in section.items()}


def _merged(raw: dict, name: str, path: Path) -> dict[str, Any]:
    """The section's settings (see `setting`), overridden by the profile's non-null values."""
    defaults = setting(name)
    given = _section(raw, name, list(defaults), path)
    return {**defaults, **{k: v for k, v in given.items() if v is not None}}


def _parse(parser: Any, value: Any, path: Path, key: str, expected: str) -> Any:
    try:
        return parser(value)
    except Exception:  # dask's parsers raise ValueError, TypeError, KeyError, AttributeError, …
        raise InputError(f"{path}: '{key}' must be {expected} (got {value!r})") from None


def _walltime_seconds(value: Any, path: Path, key: str) -> float | None:
    if value is None:
        return None
    match = _WALLTIME.fullmatch(str(value))
    if match is None:
        raise InputError(f"{path}: '{key}' must be written [D-]HH:MM:SS, e.g. 01:00:00 (got {value!r})")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
