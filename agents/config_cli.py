"""Dataclass configs as command-line flags: one ``--flag`` per field, its help the field's docstring.

Library code never parses ``argv``: the ``vpt`` command (:mod:`agents.cli`)
calls :func:`add_dataclass_arguments` for each config dataclass, then
:func:`dataclass_from_args` to build it, so every knob is a documented
dataclass field first and a flag second (as CleanRL's ``tyro.cli(Args)``).

Supported field types: ``int``, ``float``, ``str``, ``bool`` (``--x`` /
``--no-x``), ``X | None`` (the word ``none`` gives None), ``tuple[float,
float]`` (two values) and ``dict`` (a JSON object).

Example:
    >>> import argparse
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Cfg:
    ...     steps: int = 10
    ...     '''How many steps.'''
    ...     scale: tuple[float, float] = (0.05, 1.0)
    ...     '''Crop area range.'''
    >>> p = argparse.ArgumentParser()
    >>> add_dataclass_arguments(p, Cfg)
    >>> dataclass_from_args(Cfg, p.parse_args(["--steps", "3", "--scale", "0.1", "0.5"]))
    Cfg(steps=3, scale=(0.1, 0.5))
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import json
import re
import textwrap
import typing
from collections.abc import Iterable
from typing import Any

__all__ = ["add_dataclass_arguments", "dataclass_from_args", "field_docs"]


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (``name -> text``)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")


def plain_text(doc: str) -> str:
    """A docstring's reST markup as plain text for ``--help`` (roles and double backquotes).

    >>> plain_text("One of :data:`METHODS` (``'clip'``) or :func:`~agents.encoders.make_encoder`.")
    "One of METHODS ('clip') or make_encoder."
    """
    doc = _ROLE.sub(lambda m: m[2].rsplit(".", 1)[-1] if m[1] else m[2], doc)
    return doc.replace("``", "")


def _none_or(parse: Any) -> Any:
    def convert(text: str) -> Any:
        return None if text.lower() == "none" else parse(text)

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def _json_dict(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
    title: str | None = None,
    choices: dict[str, Iterable[str]] | None = None,
) -> None:
    """Add one flag per field of ``cls`` (an argument group titled ``title`` if given); its help is
    the field's docstring as plain text, with the accepted values and the default.

    Args:
        parser: an ``argparse`` parser (or group).
        cls: a dataclass type.
        exclude: fields that get no flag (set by the caller).
        defaults: default values overriding the dataclass's own.
        title: an argument-group title for ``--help``.
        choices: the accepted values of some fields, listed in their help (the config itself
            refuses others, naming them).
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(title) if title else parser
    overrides = defaults or {}
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        hint = hints[f.name]
        if f.name in overrides:
            default = overrides[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        accepted = f" Choices: {', '.join(choices[f.name])}." if choices and f.name in choices else ""
        help_text = (plain_text(docs.get(f.name, "")) + accepted + f" (default: {default!r})").replace(
            "%", "%%"
        )
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        origin = typing.get_origin(base)
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text, "dest": f.name}
        if base is bool:
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kw)
            continue
        if origin is tuple:
            item = typing.get_args(base)[0]
            group.add_argument(_flag(f.name), nargs=len(typing.get_args(base)), type=item, **kw)
            continue
        if base is dict or origin is dict:
            parse: Any = _json_dict
        elif base in (int, float, str):
            parse = base
        else:
            raise TypeError(f"field {cls.__name__}.{f.name} has an unsupported type {hint!r}")
        group.add_argument(_flag(f.name), type=_none_or(parse) if optional else parse, **kw)


def dataclass_from_args(
    cls: type, namespace: argparse.Namespace, *, defaults: dict[str, Any] | None = None, **fixed: Any
) -> Any:
    """Build ``cls`` from the flags given on the command line (absent ones keep their default).

    Args:
        cls: the dataclass type.
        namespace: parsed arguments (from a parser set up by :func:`add_dataclass_arguments`).
        defaults: the same overrides passed to :func:`add_dataclass_arguments`.
        **fixed: field values set by the caller (they win).
    """
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values = {k: v for k, v in (defaults or {}).items() if k in names}
    given = vars(namespace)
    for name in names:
        if name in given:
            value = given[name]
            hint = typing.get_type_hints(cls)[name]
            if isinstance(value, list) and typing.get_origin(hint) is not list:
                value = tuple(value)
            values[name] = value
    values.update(fixed)
    return cls(**values)
