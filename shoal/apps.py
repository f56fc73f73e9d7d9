"""Your own code where a config takes a name: ``package.module:attribute`` import paths.

Every name a config takes (``model.name``, ``data.dataset``, ``strategy.name``, the
``transforms`` list, and ``client``) is either a built-in name or an import path such as
``"myproject.model:Net"``. Paths resolve against the user's project folder first (the
nearest folder, from the config file or the working directory upward, that holds a
``shoal.toml`` or a ``pyproject.toml``), then the installed packages. Every failure is a
:class:`~shoal.errors.ConfigError` that names the key, the path it tried and the fix.

What each key expects (the attribute is called with the keyword arguments it accepts):

- ``model.name``: an ``nn.Module`` subclass or a function returning one; may accept
  ``input_shape``, ``num_classes`` and ``hidden``.
- ``data.dataset``: a function returning a ``FederatedDataset`` (your own clients) or a
  ``LabeledData`` (one dataset, partitioned by ``[data]`` like the built-ins); may accept
  ``path``, ``num_clients``, ``seed`` and ``test_fraction``.
- ``strategy.name``: a ``Strategy`` subclass or a function returning one; may accept any
  ``FedAvg`` argument (``clients_per_round``, ``fraction``, ``min_clients``, ...).
- ``transforms``: an ``UpdateTransform`` subclass or a function returning one.
- ``client``: an app builder (an object with ``build(model) -> ClientApp``), or a
  function ``(model, trainer) -> ClientApp`` where ``trainer`` is the ``[trainer]`` table.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shoal.errors import ConfigError

_DOTTED = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
_PATH = re.compile(rf"^{_DOTTED}:{_DOTTED}$")  # package.module:attribute
PROJECT_FILES = ("shoal.toml", "pyproject.toml")


class Ref(str):
    """An import path ``package.module:attribute`` in a config (a str, so it reads and
    writes as one in TOML)."""

    __slots__ = ()

    @classmethod
    def parse(cls, key: str, value: str) -> Ref:
        if not _PATH.match(value):
            raise ConfigError(
                f"{key}: {value!r} is neither a built-in name nor an import path; "
                "write package.module:attribute, e.g. 'myproject.model:Net'"
            )
        return cls(value)


def label(value: Any) -> str:
    """How a built-in name or an import path prints."""
    return str(getattr(value, "value", value))


def find_project(start: Path | None = None) -> Path | None:
    """The nearest folder from ``start`` (default: the working directory) upward that holds
    a ``shoal.toml`` or a ``pyproject.toml``: the root of the user's project."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / name).is_file() for name in PROJECT_FILES):
            return folder
    return None


def use_project(folder: Path | None) -> None:
    """Let import paths find the modules of the project at ``folder``."""
    if folder is not None and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def resolve(key: str, ref: str) -> Any:
    """The object ``ref`` names; a ConfigError naming ``key`` if it cannot be found."""
    module_name, _, attr_path = ref.partition(":")
    use_project(find_project())
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):  # the path itself
            raise ConfigError(
                f"{key} = {ref!r}: no module {module_name!r} in the project folder "
                f"({find_project() or Path.cwd()}) or the installed packages; check the spelling, "
                "or run shoal from your project folder"
            ) from None
        raise ConfigError(f"{key} = {ref!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # the user's module itself raised on import
        raise ConfigError(
            f"{key} = {ref!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_"))[:12]
            raise ConfigError(
                f"{key} = {ref!r}: {module_name!r} has no attribute {part!r}"
                + (f"; it defines {', '.join(public)}" if public else "")
            )
        obj = getattr(obj, part)
    return obj


def call_with(key: str, ref: str, fn: Callable[..., Any], offered: Mapping[str, Any]) -> Any:
    """Call ``fn`` with the arguments it accepts out of ``offered``."""
    if not callable(fn):
        raise ConfigError(f"{key} = {ref!r} is a {type(fn).__name__}, not a class or a function")
    if inspect.isabstract(fn):  # Python would say only "Can't instantiate abstract class"
        undefined = ", ".join(sorted(getattr(fn, "__abstractmethods__", ())))
        raise ConfigError(f"{key} = {ref!r} is an abstract class: it does not define {undefined}")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs = dict(offered)
    else:
        kwargs = {k: v for k, v in offered.items() if k in params}
    missing = [
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and n not in kwargs
    ]
    if missing:
        raise ConfigError(
            f"{key} = {ref!r} needs {', '.join(missing)}, which shoal does not provide; it can "
            f"accept any of: {', '.join(offered)}"
        )
    return fn(**kwargs)


def build(key: str, ref: str, want: type | tuple[type, ...], offered: Mapping[str, Any]) -> Any:
    """Resolve ``ref``, call it with what it accepts, and check the result's type."""
    made = call_with(key, ref, resolve(key, ref), offered)
    if not isinstance(made, want):
        names = " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
        raise ConfigError(f"{key} = {ref!r} returned a {type(made).__name__}; {key} needs a {names}")
    return made
