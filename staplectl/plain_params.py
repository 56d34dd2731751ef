"""Plain parameters coerced without pydantic.

Typer (0.29) coerces every parameter through a pydantic TypeAdapter:
importing pydantic and building the adapters took about 130 ms of every
command's start, more than all the rest of `staplectl check`
(bench/startup.py, docs/benchmarks.md). Typer documents no cheaper path.
staplectl's parameters are plain (str; bool; int and float, some with
bounds; Path without checks; lists of those), and this coerces them as the
adapters do, at the cost of a function call; anything else (a choice, a
parser, a checked path) keeps Typer's own coercion.

It reaches into Typer's parameter classes (their ``type_descriptor`` and
``_runtime_param``): pyproject.toml pins Typer below 0.30, and
tests/cli/test_startup.py fails when a command loads pydantic again or a
plain parameter is coerced differently.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer._click.exceptions import BadParameter
from typer._coercion import RuntimeParam

#: Typer's defaults for a Path parameter: anything else is checked by Typer
_PATH_DEFAULTS = {"exists": False, "file_okay": True, "dir_okay": True, "writable": False, "readable": True,
                  "resolve_path": False, "allow_dash": False, "path_type": None}  # fmt: skip


@dataclass(frozen=True)
class PlainParam(RuntimeParam):
    convert: Callable[[Any], Any]
    many: bool

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            if self.many:
                return [self.convert(item) for item in (value if isinstance(value, (list, tuple)) else [value])]
            return self.convert(value)
        except (TypeError, ValueError) as error:
            raise BadParameter(str(error), ctx=ctx, param=param) from None


def install(params: list[Any]) -> None:
    """Give each plain parameter among ``params`` a coercion without pydantic."""
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", "absent") is not None:
            continue  # not Typer's, or its coercion is built already
        plain = _plain(descriptor.annotation, descriptor.parameter_info)
        if plain is not None:
            param._runtime_param = plain


def _plain(annotation: Any, info: Any) -> PlainParam | None:
    if info.parser is not None or getattr(info, "click_type", None) is not None:
        return None
    annotation = _without_none(annotation)
    many = typing.get_origin(annotation) is list
    if many:
        (annotation,) = typing.get_args(annotation)
    convert = _converter(annotation, info)
    if convert is None:
        return None
    return PlainParam(parameter_info=info, annotation=annotation, convert=convert, many=many)


def _without_none(annotation: Any) -> Any:
    """X for Optional[X] (X | None)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _converter(annotation: Any, info: Any) -> Callable[[Any], Any] | None:
    if annotation is str:
        return str
    if annotation is bool:
        return _bool
    if annotation is Path:
        if any(getattr(info, name, default) != default for name, default in _PATH_DEFAULTS.items()):
            return None
        return Path
    if annotation in (int, float) and not getattr(info, "clamp", False):
        return _number(annotation, info.min, info.max)
    return None


_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off", ""}


def _bool(value: Any) -> bool:
    """A flag's own bool, or a word (from an environment variable) as pydantic reads one."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ValueError(f"{value!r} is not a valid boolean")


def _number(kind: type, low: float | None, high: float | None) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a valid {kind.__name__}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a valid {kind.__name__}") from None
        if (low is not None and not number >= low) or (high is not None and not number <= high):  # nan too
            raise ValueError(f"{value} is not in the range {_range(low, high)}")
        return number

    return convert


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:g}<=x<={high:g}"
    return f"x>={low:g}" if low is not None else f"x<={high:g}"
