"""Typed configs: dataclasses <-> JSON, with dotted command-line overrides.

Every run saves its full config next to its weights, so a folder is enough to reproduce it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# The model folder MATS.from_pretrained() loads when given none, and the newest folder format it reads.
# Here, torch-free, so that commands can check a folder before deciding to load anything.
DEFAULT_MODEL = Path(__file__).resolve().parent / "resources" / "default_model"
FORMAT_VERSION = 2  # 1: no model_type / fingerprint / card (still read)


def read_model_config(folder: Path) -> dict:
    """``config.json`` of a model folder, checked: a clear error for a missing or foreign folder."""
    path = folder / "config.json"
    if not path.is_file():
        if folder == DEFAULT_MODEL:
            raise FileNotFoundError(
                f"the default model is missing at {folder}; reinstall mats or train it with "
                "`mats corpus build && mats train --config configs/default.json`")
        raise FileNotFoundError(f"{folder} is not a MATS model folder (no config.json)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != "mats" or raw.get("model_type", "mats") != "mats":
        raise ValueError(f"{path} is not a MATS model config (expected \"model_type\": \"mats\")")
    if int(raw.get("format_version", 1)) > FORMAT_VERSION:
        raise ValueError(f"{path} has format version {raw['format_version']}; this mats reads <= "
                         f"{FORMAT_VERSION} (upgrade mats)")
    return raw


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys are an error (typos must not pass)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except (ValueError, TypeError):
                continue
        raise ValueError(f"{where}: {value!r} does not match {tp}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def save_json(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_dict(obj), indent=2) + "\n")
    tmp.replace(path)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``["train.lr=1e-4", "model.mapper.depth=2"]`` -> nested update; values parsed as JSON if possible."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key.path=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return data
