"""A config as text: TOML files and command-line flags, both coerced to the schema's types.

Unknown keys and bad values are :class:`~shoal.errors.ConfigError`\\s that name the key and
what is allowed (with a suggestion for a near miss).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from shoal.apps import Ref, find_project, use_project
from shoal.config.schema import RunConfig
from shoal.errors import ConfigError


def _hints(cls: type) -> dict[str, Any]:
    """A section's keys and types; a field that is a table of its own (the trainer's
    ``personalization``, filled from ``[personalization]``) is not one of its keys."""
    tables = {f.name for f in dataclasses.fields(cls) if f.metadata.get("table")}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k not in tables}


SECTIONS = (
    "data", "model", "strategy", "trainer", "personalization", "continual",
    "eval", "privacy", "secagg", "he", "compression", "split",
)  # fmt: skip


def _section_types() -> dict[str, type]:
    hints = _hints(RunConfig)
    return {name: hints[name] for name in SECTIONS}


# Where the built-in choices of a key that takes only user code are set instead.
_WHERE_ELSE = {
    "transforms": (
        "; built-in compressors (half, quantize, top-k, random-mask, sign, powersgd) are set in "
        "[compression] uplink, differential privacy in [privacy]"
    ),
}


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a TOML or command-line value to the field's type, or say what is allowed."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() == "none")
        if is_none and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if Ref in inner and isinstance(value, str) and ":" in value:  # an import path to user code
            return Ref.parse(key, value)
        try:
            return coerce(key, value, inner[0])
        except ConfigError as exc:
            if Ref not in inner:
                raise
            raise ConfigError(f"{exc}, or an import path to your own: 'package.module:attribute'") from None
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(coerce(key, v.strip() if isinstance(v, str) else v, args[0]) for v in items if v != "")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = ", ".join(repr(m.value) for m in tp)
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {allowed}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is Ref:
        if not isinstance(value, str) or (key in _WHERE_ELSE and ":" not in value):
            hint = _WHERE_ELSE.get(key, "")
            wanted = "expected an import path 'package.module:attribute'"
            raise ConfigError(f"{key}: {wanted}, got {value!r}{hint}")
        return Ref.parse(key, value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp in (int, float):
        return _number(key, value, tp)
    raise ConfigError(f"{key}: unsupported type {tp}")


def _number(key: str, value: Any, tp: type) -> int | float:
    what = "an integer" if tp is int else "a number"
    if tp is int and type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{key}: expected {what}, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{key}: expected {what}, got {value!r}") from None
    if tp is int:
        if not number.is_integer():
            raise ConfigError(f"{key}: expected {what}, got {value!r}")
        return int(number)
    return number


def _unknown(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], [k.rsplit(".", 1)[-1] for k in known], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}. Known keys: {', '.join(sorted(known))}")


def _values(cls: type, section: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A section's keys, each known and of its field's type."""
    hints = _hints(cls)
    prefix = f"{section}." if section else ""
    kwargs = {}
    for k, v in raw.items():
        if k not in hints:
            raise _unknown(prefix + k, [prefix + n for n in hints])
        kwargs[k] = coerce(prefix + k, v, hints[k])
    return kwargs


def _build(cls: type, section: str, kwargs: dict[str, Any]) -> Any:
    prefix = f"{section}." if section else ""
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{exc}" if section in str(exc) else f"{prefix.rstrip('.')}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{prefix}{exc}") from None


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """Every key and type is checked before any section is built: building one checks
    its values with the code it will run (a strategy, DP), which costs imports."""
    sections = _section_types()
    top: dict[str, Any] = {}
    values: dict[str, dict[str, Any]] = {}
    top_hints = {k: v for k, v in _hints(RunConfig).items() if k not in sections}
    for k, v in raw.items():
        if k in sections:
            if not isinstance(v, dict):
                raise ConfigError(f"[{k}] must be a table, got {v!r}")
            values[k] = _values(sections[k], k, v)
        elif k in top_hints:
            top[k] = coerce(k, v, top_hints[k])
        else:
            raise _unknown(k, [*top_hints, *(f"[{s}]" for s in sections)])
    built = {k: _build(sections[k], k, v) for k, v in values.items()}
    return RunConfig(**top, **built)


def load(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    use_project(find_project(path.resolve().parent))  # its import paths name modules of its project
    return from_dict(raw)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    return value


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    out: dict[str, Any] = _plain(dataclasses.asdict(cfg))
    for f in dataclasses.fields(cfg.trainer):  # filled from other tables, not [trainer] keys
        if f.metadata.get("table"):
            out["trainer"].pop(f.name, None)
    return out


def to_toml(cfg: RunConfig) -> str:
    return tomli_w.dumps(to_dict(cfg))


# -- command-line flags ------------------------------------------------------------------
@dataclass(frozen=True)
class Flag:
    flag: str  # "--clients-per-round"
    section: str | None  # None for top-level keys
    key: str
    type: Any
    default: Any


def _default(f: dataclasses.Field[Any]) -> Any:
    return f.default if f.default_factory is dataclasses.MISSING else f.default_factory()


def _section_defaults(field: dataclasses.Field[Any], cls: type) -> dict[str, Any]:
    """A section's defaults, read from its fields: building the section (StrategyConfig(),
    PrivacyConfig()) would check its values with their code, which costs imports."""
    if field.default_factory is cls:  # type: ignore[comparison-overlap]
        return {f.name: _default(f) for f in dataclasses.fields(cls)}
    made = _default(field)  # a factory with values of its own: shoal run's trainer
    return {f.name: getattr(made, f.name) for f in dataclasses.fields(cls)}


def flags() -> list[Flag]:
    """One flag per config key; names shared by two sections carry the section's name."""
    sections = _section_types()
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    entries: list[tuple[str | None, str, Any, Any]] = [
        (None, k, t, _default(fields[k])) for k, t in _hints(RunConfig).items() if k not in sections
    ]
    for s, cls in sections.items():
        defaults = _section_defaults(fields[s], cls)
        entries += [(s, k, t, defaults[k]) for k, t in _hints(cls).items()]
    counts: dict[str, int] = {}
    for _, k, _, _ in entries:
        counts[k] = counts.get(k, 0) + 1
    plain = {k for k, n in counts.items() if n == 1 and k not in ("mode", "method")}  # else: --section-key
    return [
        Flag(
            "--" + (k if k in plain or s is None else f"{s}_{k}").replace("_", "-"),
            s,
            k,
            t,
            d,
        )
        for s, k, t, d in entries
    ]


def apply_overrides(raw: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """Merge ``{"--flag": "value"}`` strings into a raw config dict (values coerced later)."""
    by_flag = {f.flag: f for f in flags()}
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for flag, value in overrides.items():
        if flag not in by_flag:
            raise _unknown(flag, list(by_flag))
        f = by_flag[flag]
        target = out.setdefault(f.section, {}) if f.section else out
        target[f.key] = coerce(f.flag, value, f.type)
    return out
