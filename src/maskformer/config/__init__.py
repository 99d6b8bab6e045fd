"""One configuration for everything: nested dataclasses, YAML load/save, type-checked ``a.b=c`` overrides.

A YAML file may name a parent with ``_base_: relative/path.yaml``; the child's keys are merged over it.
Unknown keys and values of the wrong type are errors that name the key (``ConfigError``).
Modules never read this object: ``maskformer.build`` turns it into plain constructor arguments.
``sections.py`` holds the dataclasses, ``ranges.py`` the value ranges; everything is re-exported here.

May import: ``errors``, ``fileio``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..fileio import SPECIAL_FILE, atomic_write_text, broken_link, special_file
from .ranges import check_ranges
from .sections import (
    BackboneConfig,
    Config,
    DataConfig,
    InferenceConfig,
    LossConfig,
    ModelConfig,
    SolverConfig,
    TestConfig,
    TrainConfig,
)

__all__ = [
    "BackboneConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "InferenceConfig",
    "LossConfig",
    "ModelConfig",
    "SolverConfig",
    "TestConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats. Raises ConfigError."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, key)
    if origin in (list, tuple):
        (item_tp,) = typing.get_args(tp)[:1]
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}' has a value of the wrong type: {value!r}")
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):  # (YAML reads .nan and .inf, float() reads "nan" and "inf")
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    return value


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise _key_error(f"unknown config key '{key}'", key)
        try:
            kwargs[k] = _coerce(v, hints[k], key)
        except ConfigError as e:
            e.key = getattr(e, "key", key)  # (the innermost key: where in the YAML files to look)
            raise
    return cls(**kwargs)


def _key_error(message: str, key: str) -> ConfigError:
    error = ConfigError(message)
    error.key = key
    return error


def _sets_key(data: dict, key: str) -> bool:
    """Whether the nested dict of one YAML file sets the dotted ``key``."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def config_from_dict(data: dict) -> Config:
    """Build a Config from a nested dict; unknown keys, wrong types and values out of range raise ConfigError."""
    cfg = _from_dict(Config, data or {})
    check_ranges(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """``cfg`` as YAML would give it (what checkpoints and ``config.yaml`` store): numpy scalars set in Python as
    Python numbers, paths as strings, tuples as lists."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # (numpy scalars; a 0-d array)
    return item() if callable(item) and getattr(value, "ndim", None) == 0 else value


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's error in one line with where it is: "line 2, column 4: expected ',' or '}', but got ':' (while parsing
    a flow mapping started at line 1)" (its first line alone said only "while parsing a flow mapping")."""
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    if not problem or mark is None:
        return str(e).splitlines()[0]
    context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
    where = f" started at line {start.line + 1}" if start is not None and start.line != mark.line else ""
    during = f" ({context}{where})" if context else ""
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}{during}"


def _yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """(file, its keys without ``_base_``) for ``path`` and its ``_base_`` ancestors, the child first."""
    if why := broken_link(path) or (SPECIAL_FILE if special_file(path) else None):
        raise ConfigError(f"{path}: {why}")
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _base_ cycle")
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a config file (name a .yaml file)")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
        if data is None:  # (an empty file gave the built-in defaults, an R50 for ADE20K, without a word)
            raise ConfigError(f"{path}: empty config file (write keys, or `_base_: some.yaml` to start from one)")
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(e)})") from None
    except UnicodeDecodeError as e:  # e.g. `maskformer info run/model_final.pt`, or a config saved as Latin-1
        raw = path.read_bytes()[:4096]
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):  # (a byte-order mark: "Unicode" in some editors' save dialogs)
            raise ConfigError(f"{path}: UTF-16 text: save the config as UTF-8") from None
        if b"\0" in raw or raw.startswith(b"PK"):  # (a checkpoint: a zip archive or a pickle, NUL bytes early)
            raise ConfigError(f"{path}: not a YAML config (binary content; a checkpoint?)") from None
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}): save the"
                          " config as UTF-8") from None  # fmt: skip
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping")
    base = data.pop("_base_", None)
    if base and not isinstance(base, str):  # (mmcv-style configs list several bases)
        raise ConfigError(f"{path}: _base_ must be one path (a string), got {base!r}")
    if not base:
        return [(path, data)]
    if not (path.parent / str(base)).is_file():
        raise ConfigError(f"{path}: _base_ {base}: config file not found (the path is relative to this file)")
    return [(path, data), *_yaml_chain(path.parent / str(base), (*seen, path))]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key written twice in one mapping (the last one silently won)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (line {key_node.start_mark.line + 1})"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=c"`` -> (["a", "b"], parsed c); the value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value, e.g. model.num_queries=50")
    key, raw = text.split("=", 1)
    word = raw.strip()
    if re.fullmatch(r"[-+]?0[0-9_]+", word):  # (YAML 1.1 reads 010 as octal 8: a shell user means ten)
        return key.strip().split("."), int(word.replace("_", ""))
    if re.search(r"\s#", raw) and not word.startswith(("[", "{", "'", '"')):
        return key.strip().split("."), word  # (a " #" in a path is part of it, not a YAML comment)
    try:
        value = yaml.safe_load(raw) if word else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    data = _deep_merge({}, data)
    set_by: dict[tuple[str, ...], str] = {}  # the override that put a value where a section was expected
    for text in overrides or []:
        path, value = parse_override(text)
        if not all(part.strip() for part in path):
            raise ConfigError(f"override '{text}': the key has an empty part (write section.key=value)")
        node = data
        for i, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                culprit = set_by.get(tuple(path[: i + 1]))
                if culprit is not None:
                    raise ConfigError(f"override '{culprit}': '{'.'.join(path[: i + 1])}' is a section, not a value")
                raise ConfigError(f"override '{text}': '{part}' is not a section")
        set_by[tuple(path)] = text
        if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):  # a section: merged, not replaced
            value = _deep_merge(node[path[-1]], value)
        node[path[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (with ``_base_`` inheritance) and apply ``a.b=c`` overrides, checking every key."""
    if isinstance(overrides, str):  # one override given as a string, not a list of them
        overrides = [overrides]
    chain = _yaml_chain(Path(path)) if path else []
    data: dict = {}
    for _, keys in reversed(chain):  # the base first, each child's keys merged over it
        data = _deep_merge(data, keys)
    try:
        return config_from_dict(apply_overrides(data, overrides))
    except ConfigError as e:  # a bad key of a YAML file (not of a --set override) names the file
        key = getattr(e, "key", None)
        set_by_override = key and any(".".join(parse_override(o)[0]) in (key, *_parents(key)) for o in overrides or [])
        where = next((f for f, keys in chain if _sets_key(keys, key)), None) if key and not set_by_override else None
        if where is None:
            raise
        raise ConfigError(f"{where}: {e}") from None


def _parents(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def save_config(cfg: Config, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
