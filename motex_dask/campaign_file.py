"""Campaign files: YAML → validated `settings.Campaign`.

`_build` walks the YAML mapping against the dataclass fields, so an unknown or misspelt key, a wrong
type or an out-of-range value becomes one `InputError` that names the file and the field
(``fit.qmin``) and says what to do.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError
from .settings import Campaign, ParamSpec, SettingError, field_key, to_plain


def yaml_scalar(value: Any) -> str:
    """A value as it is written in a campaign file."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    return text if re.fullmatch(r"[\w./+-]+", text) else json.dumps(text)


def _type_name(tp: Any) -> str:
    return {float: "a number", int: "a whole number", bool: "true or false", str: "a string",
            Path: "a file path"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, where: str, default: Any = None) -> Any:
    """Check/convert one YAML value to the annotated type (`default`: the field's default value)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None  # an optional field left at "the default": stored settings write null
        per_key = [a for a in args if typing.get_origin(a) is dict]
        if per_key and isinstance(value, dict) and value and not set(value) & _keys(args[0]):
            # uiso: {W: {...}, O: {...}}; each element's block starts from the one-block default
            return _convert(value, per_key[0], where, default if dataclasses.is_dataclass(default) else None)
        return _convert(value, args[0], where, default if not isinstance(default, dict) else None)
    if origin is dict:
        item = typing.get_args(tp)[1]
        if not isinstance(value, dict):
            raise SettingError(where, f"must be a mapping (got {value!r})")
        base = default if isinstance(default, item) else None
        return {str(k): _convert(v, item, f"{where}.{k}", base) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            example = ", ".join(f"{k}: {yaml_scalar(v)}" for k, v in to_plain(default or tp()).items()) \
                if tp is ParamSpec else ""
            raise SettingError(where, f"must be a mapping of keys{f' such as {{{example}}}' if example else ''} "
                                      f"(got {value!r})")
        # Keys left out keep the field's default (zoom: {start: 1.01} keeps min 0.97, max 1.03).
        return _build(tp, value, f"{where}.", base=default if dataclasses.is_dataclass(default) else None)
    if origin is tuple and typing.get_args(tp)[-1] is not Ellipsis:  # fixed length: radius: [3, 8]
        args = typing.get_args(tp)
        if not isinstance(value, list) or len(value) != len(args):
            raise SettingError(where, f"must be a list of {len(args)} numbers such as [3, 8] (got {value!r})")
        return tuple(_convert(v, a, where) for v, a in zip(value, args))
    if origin is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):  # parts: [{…}, {…}]
        if not isinstance(value, list):
            raise SettingError(where, f"must be a list of mappings (got {value!r})")
        return tuple(_convert(v, typing.get_args(tp)[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise SettingError(where, f"must be a list of element symbols such as [W] (got {value!r})")
        return tuple(items)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        Path: isinstance(value, str) and value != "",
    }[tp]
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)  # size: 2e4
    if not ok:
        raise SettingError(where, f"must be {_type_name(tp)} (got {value!r})")
    if tp is float and math.isnan(value):
        raise SettingError(where, "must be a number, not NaN")
    return Path(value) if tp is Path else (float(value) if tp is float else value)


def _keys(tp: Any) -> set[str]:
    """The campaign-file keys of a settings dataclass (empty for other types)."""
    return {field_key(f) for f in dataclasses.fields(tp)} if dataclasses.is_dataclass(tp) else set()


def _unknown_key_hint(cls: type, key: str, prefix: str) -> str:
    """'; did you mean …?' for a misspelt key, or for a key that belongs in a section."""
    fields = [field_key(f) for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    close = difflib.get_close_matches(key, fields, n=1)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            inner = [field_key(g) for g in dataclasses.fields(hints[f.name])]
            close = difflib.get_close_matches(key, inner, n=1)
            if close:
                return f"; did you mean '{prefix}{field_key(f)}.{close[0]}'? (it belongs in the {field_key(f)} section)"
    return f"; known keys: {', '.join(fields)}"


def _build(cls: type, mapping: dict[str, Any], prefix: str = "", base: Any = None) -> Any:
    """Instantiate dataclass `cls` from a YAML mapping (over the values of `base`); unknown keys are errors."""
    fields = {field_key(f): f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in mapping.items():
        where = f"{prefix}{key}"
        if key not in fields:
            raise SettingError(where, f"unknown key{_unknown_key_hint(cls, str(key), prefix)}")
        f = fields[key]
        default = getattr(base, f.name) if base is not None else f.default
        kwargs[f.name] = _convert(value, hints[f.name], where, default)
    missing = [k for k, f in fields.items() if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SettingError(f"{prefix}{missing[0]}", "is required")
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except SettingError as err:
        raise SettingError(f"{prefix}{err.field_name}", err.message) from None


class _Loader(yaml.SafeLoader):
    """YAML as people write it: ``1e-3`` is a number (YAML 1.1 needs ``1.0e-3``), a repeated key is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (lines {seen[key] + 1} and "
                    f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))
_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_mapping)


def load_yaml(text: str, path: Path) -> Any:
    """Parse campaign YAML text; a syntax error becomes one InputError naming the file and line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise InputError(f"{path}: not valid YAML{line}: {getattr(err, 'problem', None) or err}") from None


def natural_key(path: Path) -> tuple:
    """Sort key of a frame file: its name with digit runs compared as numbers (frame2 < frame10)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", path.name)) + (str(path),)


def _series(spec: Any, base: Path, order: str, path: Path) -> tuple[Path, ...]:
    """The frame files of `data:` given as a list of paths or a glob, in campaign order."""
    def bad(message: str) -> InputError:
        return InputError(f"{path}: field 'data': {message}")

    if isinstance(spec, str):  # a glob
        if order == "listed":
            raise bad(f"a glob ({spec!r}) has no order of its own; list the files to use frame_order: listed")
        files = [Path(p).resolve() for p in glob.glob(str(base / spec), recursive=True) if Path(p).is_file()]
        if not files:
            raise bad(f"no file matches {spec!r} (relative to {base}); check the pattern")
    else:
        if not spec or not all(isinstance(p, str) and p for p in spec):
            raise bad("a list of data files must hold at least one file name, each a string")
        files = [(base / p).resolve() for p in spec]
        for file in files:
            if not file.is_file():
                raise bad(f"frame {file} does not exist" if not file.is_dir() else f"{file} is a folder; name the file")
    if order == "natural":
        files.sort(key=natural_key)
    names = [f.name for f in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise bad(f"frames are named by their file name, and {twice[0]!r} appears twice; rename one")
    return tuple(files)


def parse_campaign(mapping: Any, path: Path) -> Campaign:
    """Validate a loaded YAML mapping; `path` names the file in errors and anchors relative paths."""
    if not isinstance(mapping, dict):
        raise InputError(f"{path}: a campaign file must be a YAML mapping of keys (see `motex init`)")
    spec = mapping.get("data")
    series = isinstance(spec, list) or (isinstance(spec, str) and glob.has_magic(spec))
    if series:
        mapping = {**mapping, "data": "."}  # resolved below, once frame_order is known
    elif "frame_order" in mapping or "frames_per_task" in mapping:
        key = "frame_order" if "frame_order" in mapping else "frames_per_task"
        raise InputError(f"{path}: field '{key}': applies to a series of frames only "
                         "(data: a list of files or a glob such as frames/*.gr); remove it")
    try:
        campaign = _build(Campaign, mapping)
    except SettingError as err:
        raise InputError(f"{path}: field '{err.field_name}': {err.message}") from None
    base = path.resolve().parent
    if series:
        frames = _series(spec, base, campaign.frame_order, path)
        try:
            campaign = dataclasses.replace(campaign, data=frames[0], frames=frames)
        except SettingError as err:
            raise InputError(f"{path}: field '{err.field_name}': {err.message}") from None
    store = campaign.store
    if store and "://" not in store:
        store = str((base / store).resolve())
    campaign = dataclasses.replace(
        campaign,
        structure=(base / campaign.structure).resolve(),
        data=(base / campaign.data).resolve(),  # absolute already for a series
        output=(base / campaign.output).resolve(),
        store=store,
        path=path.resolve(),
    )
    for name in ("structure", "data"):
        file = getattr(campaign, name)
        if file.is_dir():
            raise InputError(f"{path}: field '{name}': {file} is a folder; name the file itself")
        if not file.is_file():
            raise InputError(f"{path}: field '{name}': file {file} does not exist")
    if campaign.output.exists() and not campaign.output.is_dir():
        raise InputError(f"{path}: field 'output': {campaign.output} is a file; name a folder for the outputs")
    return campaign


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the campaign file (YAML), e.g. workflows/c60.yaml")
    if not path.is_file():
        raise InputError(f"{path}: campaign file not found (write one with `motex init STRUCTURE DATA`)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file; a campaign file is YAML") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read the campaign file ({err.strerror})") from None
    return parse_campaign(load_yaml(text, path), path)
