"""Write the API reference, ``docs/api/*.md``, from the docstrings of the public modules.

One Markdown page per module of :data:`MODULES` (its docstring, then every name of its
``__all__`` defined there: signature, docstring, dataclass fields, public methods) and an index,
``docs/api/README.md``, listing them all. A name a module re-exports is documented once, under
the listed module nearest to where it is defined, and linked from the others.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python docs/make_api.py          # (re)write docs/api/
    OMP_NUM_THREADS=1 .venv/bin/python docs/make_api.py --check  # exit 1 if docs/api/ is stale

Docstrings are Google style with reST inline markup (double-backquoted literals, roles such as
``:func:``); they become Markdown: sections (``Args:``, ``Returns:``, ...) as bold headings with item lists,
doctests as ``pycon`` blocks, ``::`` literal blocks and signatures as ``text`` blocks (never
``python``: ``tests/test_readme.py`` runs every ``python`` block of the docs as a script), and
roles as links where the target is documented. Dataclass fields take their docs from the
attribute docstrings under them (:func:`agents.config_cli.field_docs`) or from the class's
``Args:``/``Attributes:`` section; constants from ``#:`` comments above their assignment.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import functools
import importlib
import inspect
import pkgutil
import re
import sys
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents.config_cli import field_docs  # noqa: E402

#: Where the pages go.
OUT_DIR = ROOT / "docs" / "api"
#: The index page's file name (a folder's README is what a repository host shows for it).
INDEX = "README.md"
#: The command that regenerates the pages (named in the pages and in the staleness message).
COMMAND = "OMP_NUM_THREADS=1 .venv/bin/python docs/make_api.py"
#: Top-level packages whose modules are listed as covered or not.
PACKAGES = ("vpt_env", "agents")
#: The documented modules, in page order.
MODULES: tuple[str, ...] = (
    "vpt_env",
    "vpt_env.envs",
    "vpt_env.envs.task",
    "vpt_env.envs.search",
    "vpt_env.wrappers",
    "vpt_env.sampling",
    "vpt_env.data",
    "vpt_env.data.readers",
    "vpt_env.rewards",
    "vpt_env.core.state",
    "vpt_env.core.dynamics",
    "vpt_env.core.boxes",
    "vpt_env.core.render",
    "vpt_env.core.augment",
    "vpt_env.core.random",
    "vpt_env.core.video",
    "vpt_env.tools.reward_check",
    "vpt_env.tools.reward_train",
    "vpt_env.tools.reward_bench",
    "agents.pretrain",
    "agents.systems",
    "agents.trainer",
    "agents.encoders",
    "agents.heads",
    "agents.text",
    "agents.losses",
    "agents.eval",
    "agents.export",
    "agents.sb3",
    "agents.mechanism",
    "agents.valuemap",
    "agents.known_answer",
)
#: Docstring sections whose body is a list of ``name: text`` items.
_ITEM_SECTIONS = {
    "Args",
    "Arguments",
    "Attributes",
    "Keyword Args",
    "Keyword Arguments",
    "Other Parameters",
    "Parameters",
    "Raises",
    "Shape",
    "Warns",
}
#: Sections holding examples: rendered as text, never as items.
_EXAMPLE_SECTIONS = {"Example", "Examples"}
_SECTION = re.compile(r"^([A-Z][A-Za-z]*(?: [A-Za-z]+){0,3}):\s*$")
_NAME = r"\*{0,2}`{0,2}[A-Za-z_][\w.]*`{0,2}"
_ITEM = re.compile(
    rf"^(?P<name>{_NAME}(?:(?:\s*,\s*|\s+/\s+|\s+or\s+){_NAME})*)"
    r"(?:\s*\((?P<type>[^()]*)\))?:(?:\s+(?P<text>.*))?$"
)
_INLINE = re.compile(r"``(?P<lit>.+?)``|:(?P<role>[\w:]+):`(?P<target>[^`]+)`|`(?P<interp>[^`]+)`", re.S)
_EMPHASIS = re.compile(r"(?<![\w*])(\*\*?)(?=[^\s*])([^*]*?[^\s*])\1(?![\w*])")
_BORDER = re.compile(r"^=+(?: +=+)+\s*$")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_LONG_REPR = 160
_WRAP = 88


def _is_project(obj: Any) -> bool:
    return (getattr(obj, "__module__", None) or "").split(".")[0] in PACKAGES


# --- inline markup -------------------------------------------------------------------------------


def _code(text: str) -> str:
    """``text`` as a Markdown code span (on one line)."""
    text = " ".join(text.split())
    if "`" not in text:
        return f"`{text}`"
    return f"`` {text} ``"


def _escape(text: str) -> str:
    """Plain docstring text with the characters Markdown would read as markup escaped; reST
    ``*emphasis*`` and ``**strong**`` (the same in Markdown) and ``* `` bullets are kept."""
    out: list[str] = []
    pos = 0
    for m in _EMPHASIS.finditer(text):
        out.append(_escape_plain(text[pos : m.start()]))
        out.append(m[1] + _escape_plain(m[2]) + m[1])
        pos = m.end()
    out.append(_escape_plain(text[pos:]))
    return re.sub(r"(?m)^(\s*)\\\*(?= )", r"\1*", "".join(out))


def _escape_plain(text: str) -> str:
    text = text.replace("<", "&lt;")
    text = re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)
    text = text.replace("*", "\\*")
    return re.sub(r"(?m)^(\s*)([>#])", r"\1\\\2", text)


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a documented name's entry is: page file and heading anchor."""

    page: str
    anchor: str


@dataclasses.dataclass
class Context:
    """What inline markup is resolved against: the targets, the page and module being written."""

    targets: dict[str, Target]
    page: str
    module: str
    cls: str = ""

    def link(self, name: str) -> str | None:
        """The Markdown link address of ``name`` (dotted, maybe relative), or None; an unknown
        ``Class.attribute`` links to its class."""
        name = name.lstrip("~.")
        hit = self._find(name)
        if hit is None and "." in name:
            hit = self._find(name.rsplit(".", 1)[0])
            hit = hit if hit is not None and hit.anchor else None  # a class, not a module
        return None if hit is None else self.address(hit)

    def _find(self, name: str) -> Target | None:
        candidates = [name, f"{self.module}.{name}"]
        if self.cls:
            candidates.insert(1, f"{self.module}.{self.cls}.{name}")
        for cand in candidates:
            if cand in self.targets:
                return self.targets[cand]
        tails = {t for key, t in self.targets.items() if key.endswith("." + name)}
        return tails.pop() if len(tails) == 1 else None

    def address(self, target: Target) -> str:
        """A link to ``target`` from this page."""
        if target.page == self.page:
            return f"#{target.anchor}" if target.anchor else "#"
        return target.page + (f"#{target.anchor}" if target.anchor else "")


def inline(text: str, ctx: Context) -> str:
    """reST inline markup (literals, roles) as Markdown; the rest escaped."""
    out: list[str] = []
    pos = 0
    for m in _INLINE.finditer(text):
        out.append(_escape(text[pos : m.start()]))
        pos = m.end()
        if m["lit"] is not None:
            out.append(_code(m["lit"]))
        elif m["interp"] is not None:
            out.append(_code(m["interp"]))
        else:
            target = m["target"]
            label = None
            explicit = re.fullmatch(r"(.*?)\s*<([^>]+)>", target, flags=re.S)
            if explicit:
                label, target = explicit[1], explicit[2]
            shown = label or (target.lstrip("~").rsplit(".", 1)[-1] if target.startswith("~") else target)
            href = ctx.link(target)
            out.append(f"[{_code(shown)}]({href})" if href else _code(shown))
    out.append(_escape(text[pos:]))
    return "".join(out)


# --- docstring blocks ----------------------------------------------------------------------------


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _fence(lines: list[str], lang: str) -> str:
    body = textwrap.dedent("\n".join(lines)).strip("\n")
    return f"```{lang}\n{body}\n```"


def _take_indented(lines: list[str], i: int, base: int) -> tuple[list[str], int]:
    """The lines from ``i`` on that are blank or indented deeper than ``base``."""
    block: list[str] = []
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
        block.append(lines[i])
        i += 1
    while block and not block[-1].strip():
        block.pop()
    return block, i


def _is_section(lines: list[str], i: int) -> bool:
    if _indent(lines[i]) or not _SECTION.match(lines[i]):
        return False
    nxt = next((line for line in lines[i + 1 :] if line.strip()), "")
    return _indent(nxt) > 0


def _items(body: list[str]) -> list[tuple[str, str | None, list[str]]] | None:
    """``(name, type, text lines)`` of a section of ``name: text`` items, or None if it is not one.

    An item starts at an unindented line; one whose names run over several lines
    (``a, b,`` / ``c: text``) is joined first."""
    groups: list[list[str]] = []
    for line in body:
        if line.strip() and not _indent(line):
            groups.append([line])
        elif not groups:
            return None
        else:
            groups[-1].append(line)
    items: list[tuple[str, str | None, list[str]]] = []
    for group in groups:
        m = _ITEM.match(group[0])
        if m:
            items.append((m["name"].replace("`", ""), m["type"], [m["text"] or "", *group[1:]]))
            continue
        joined = " ".join(line.strip() for line in group if line.strip())
        m = _ITEM.match(joined)
        if not m:
            return None
        items.append((m["name"].replace("`", ""), m["type"], [m["text"] or ""]))
    return items


def _item_lines(text_lines: list[str]) -> str:
    first, rest = text_lines[0], textwrap.dedent("\n".join(text_lines[1:]))
    return first + ("\n" + rest if rest.strip() else "")


def _render_item(name: str, kind: str | None, text: str, ctx: Context) -> str:
    body = render_doc(text, ctx)
    head = f"- {_code(name)}" + (f" ({inline(kind, ctx)})" if kind else "")
    if not body:
        return head
    return head + ": " + body.replace("\n", "\n  ")


def _render_section(title: str, body: list[str], ctx: Context) -> str:
    lines = textwrap.dedent("\n".join(body)).split("\n")
    parsed = None if title in _EXAMPLE_SECTIONS else _items(lines)
    if parsed is not None and (title in _ITEM_SECTIONS or len(parsed) > 1):
        rendered = "\n".join(_render_item(n, k, _item_lines(t), ctx) for n, k, t in parsed)
    else:
        rendered = render_doc("\n".join(lines), ctx)
    return f"**{title}:**\n\n{rendered}"


def render_doc(doc: str, ctx: Context, skip_sections: frozenset[str] = frozenset()) -> str:
    """A Google-style docstring (already dedented) as Markdown blocks."""
    lines = doc.expandtabs().split("\n")
    blocks: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif _is_section(lines, i):
            title = line.strip()[:-1]
            body, i = _take_indented(lines, i + 1, 0)
            if title not in skip_sections:
                blocks.append(_render_section(title, body, ctx))
        elif line.lstrip().startswith(">>>"):
            start = i
            while i < len(lines) and lines[i].strip():
                i += 1
            blocks.append(_fence(lines[start:i], "pycon"))
        else:
            start = i
            i += 1
            while (
                i < len(lines)
                and lines[i].strip()
                and not lines[i].lstrip().startswith(">>>")
                and not _is_section(lines, i)
            ):
                i += 1
            # The first line unindented: four spaces would start a code block.
            para = textwrap.dedent("\n".join(lines[start:i])).lstrip(" ")
            if _BORDER.match(para.split("\n")[0]):
                blocks.append(simple_table(para, ctx))
                continue
            heading = re.fullmatch(r"#+\s+(.+)", para.strip())
            if heading:
                blocks.append(f"**{inline(heading[1], ctx)}**")
                continue
            # reST's "(a) ..." enumerations as list items (Markdown has no such list).
            para = re.sub(r"(?m)^(\(\w{1,3}\) )", r"- \1", para)
            literal = para.rstrip().endswith("::")
            if literal:
                para = para.rstrip()[:-2].rstrip() + ("" if para.rstrip()[:-2].endswith(" ") else ":")
            if para.strip():
                blocks.append(inline(para, ctx))
            if literal:
                # The literal block: indented deeper than the paragraph's last line.
                code, i = _take_indented(lines, i, _indent(lines[i - 1]))
                if code:
                    blocks.append(_fence(code, "text"))
    return "\n\n".join(blocks)


def simple_table(text: str, ctx: Context) -> str:
    """A reST simple table (``===`` borders, one header row) as a Markdown table."""
    lines = text.split("\n")
    spans = [m.span() for m in re.finditer(r"=+", lines[0])]

    def cells(line: str) -> list[str]:
        bounds = [
            (start, spans[k + 1][0] if k + 1 < len(spans) else None) for k, (start, _) in enumerate(spans)
        ]
        return [inline(line[a:b].strip(), ctx).replace("|", "\\|") for a, b in bounds]

    rows = [cells(line) for line in lines[1:] if line.strip() and not _BORDER.match(line)]
    header, body = rows[0], rows[1:]
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(out)


def summary(doc: str, ctx: Context) -> str:
    """A docstring's first paragraph on one line (for the tables)."""
    first = doc.strip().split("\n\n")[0]
    if _SECTION.match(first.split("\n")[0]) or first.lstrip().startswith(">>>"):
        return ""
    return " ".join(inline(first, ctx).split()).replace("|", "\\|")


# --- values and signatures -----------------------------------------------------------------------


def show_value(value: Any) -> str:
    """A deterministic repr: classes and functions by name, no memory addresses, one line."""
    if isinstance(value, type):
        return value.__qualname__
    if inspect.isroutine(value):
        return getattr(value, "__qualname__", getattr(value, "__name__", repr(value)))
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{show_value(k)}: {show_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (set, frozenset)):
        inner = ", ".join(sorted(show_value(v) for v in value))
        if isinstance(value, frozenset):
            return f"frozenset({{{inner}}})" if value else "frozenset()"
        return f"{{{inner}}}" if value else "set()"
    if type(value) in (list, tuple):
        inner = ", ".join(show_value(v) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    text = " ".join(repr(value).split())
    return _ADDRESS.sub("", text)


def show_constant(name: str, ann: str | None, value: Any) -> str:
    """``name: ann = value``, a long dict, list or tuple one item a line (the first 40)."""
    head = f"{name}{f': {ann}' if ann else ''} = "
    flat = head + show_value(value)
    if len(flat) <= _WRAP or type(value) not in (dict, list, tuple) or not value:
        return head + _short(show_value(value))
    if isinstance(value, dict):
        items = [f"{show_value(k)}: {_short(show_value(v))}" for k, v in value.items()]
        opening, closing = "{", "}"
    else:
        items = [_short(show_value(v)) for v in value]
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")")
    more = [f"...  # {len(items) - 40} more"] if len(items) > 40 else []
    lines = [f"    {item}," for item in items[:40]] + [f"    {m}" for m in more]
    return head + opening + "\n" + "\n".join(lines) + "\n" + closing


def _short(text: str) -> str:
    return text if len(text) <= _LONG_REPR else text[: _LONG_REPR - 5].rstrip() + " ..."


def _annotation(ann: Any) -> str:
    if isinstance(ann, str):
        return ann
    if isinstance(ann, typing.ForwardRef):
        return ann.__forward_arg__
    return inspect.formatannotation(ann)


def _format_call(name: str, params: list[str], ret: str | None) -> str:
    tail = f" -> {ret}" if ret else ""
    flat = f"{name}({', '.join(params)}){tail}"
    if len(flat) <= _WRAP or not params:
        return flat
    return f"{name}(\n" + "".join(f"    {p},\n" for p in params) + f"){tail}"


def _param_texts(
    sig: inspect.Signature, drop_first: bool, defaults: dict[str, str] | None = None
) -> list[str]:
    """The parameters as written in a signature (``defaults`` overrides the shown defaults)."""
    defaults = defaults or {}
    params = list(sig.parameters.values())
    if (
        drop_first
        and params
        and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD)
    ):
        params = params[1:]
    out: list[str] = []
    star_done = any(p.kind is p.VAR_POSITIONAL for p in params)
    for k, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not star_done:
            out.append("*")
            star_done = True
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        text = prefix + p.name
        if p.annotation is not p.empty:
            text += f": {_annotation(p.annotation)}"
        if p.default is not p.empty:
            shown = defaults.get(p.name) or _short(show_value(p.default))
            text += (" = " if p.annotation is not p.empty else "=") + shown
        out.append(text)
        is_last_posonly = p.kind is p.POSITIONAL_ONLY and (
            k + 1 == len(params) or params[k + 1].kind is not p.POSITIONAL_ONLY
        )
        if is_last_posonly:
            out.append("/")
    return out


def _signature(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def function_signature(name: str, func: Any, drop_first: bool = False, prefix: str = "") -> str:
    """``prefix name(params) -> ret`` of a function or method."""
    sig = _signature(func)
    if sig is None:
        return f"{prefix}{name}(...)"
    ret = None if sig.return_annotation is sig.empty else _annotation(sig.return_annotation)
    return prefix + _format_call(name, _param_texts(sig, drop_first), ret)


# --- what a module documents ---------------------------------------------------------------------


@functools.cache
def _module_tree(module: str) -> ast.Module | None:
    try:
        source = inspect.getsource(importlib.import_module(module))
    except (OSError, TypeError):
        return None
    return ast.parse(source)


@functools.cache
def _source_lines(module: str) -> list[str]:
    try:
        return inspect.getsource(importlib.import_module(module)).split("\n")
    except (OSError, TypeError):
        return []


def _assigned(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    return []


def constant_doc(module: str, name: str, seen: frozenset[str] = frozenset()) -> tuple[str, str, str | None]:
    """``(defining module, doc, annotation)`` of a module-level name: its ``#:`` comment lines or the
    string under its assignment, following ``from x import name`` to where it is assigned."""
    tree = _module_tree(module)
    if tree is None or module in seen:
        return module, "", None
    body = tree.body
    for k, node in enumerate(body):
        if name in _assigned(node):
            lines = _source_lines(module)
            comment: list[str] = []
            j = node.lineno - 2
            while j >= 0 and lines[j].lstrip().startswith("#:"):
                comment.insert(0, lines[j].lstrip()[2:].strip())
                j -= 1
            doc = " ".join(comment)
            nxt = body[k + 1] if k + 1 < len(body) else None
            if (
                not doc
                and isinstance(nxt, ast.Expr)
                and isinstance(getattr(nxt, "value", None), ast.Constant)
            ):
                if isinstance(nxt.value.value, str):
                    doc = inspect.cleandoc(nxt.value.value)
            ann = ast.unparse(node.annotation) if isinstance(node, ast.AnnAssign) else None
            return module, doc, ann
    for node in body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return constant_doc(node.module, alias.name, seen | {module})
    return module, "", None


@dataclasses.dataclass
class Entry:
    """One documented name: where it is exported from and where its entry is."""

    name: str
    obj: Any
    home: str
    origin: str
    kind: str

    @property
    def key(self) -> str:
        """Its full name under its home module."""
        return f"{self.home}.{self.name}"


def _kind(obj: Any) -> str:
    if inspect.isclass(obj):
        return "class"
    if inspect.isroutine(obj) or (callable(obj) and hasattr(obj, "__wrapped__")):
        return "function"
    return "data"


def _origin(module: str, name: str, obj: Any) -> str:
    if _kind(obj) != "data" and getattr(obj, "__module__", None):
        return obj.__module__
    return constant_doc(module, name)[0]


def collect() -> dict[str, list[Entry]]:
    """Every module's ``__all__`` entries; an entry's home is the listed module that exports it and
    is the nearest package of where it is defined (else the first listed module exporting it)."""
    exported: dict[str, list[Entry]] = {}
    for module in MODULES:
        mod = importlib.import_module(module)
        names = getattr(mod, "__all__", None)
        if names is None:
            raise SystemExit(f"{module} has no __all__: list its public names there")
        entries = []
        for name in names:
            obj = getattr(mod, name)
            entries.append(Entry(name, obj, module, _origin(module, name, obj), _kind(obj)))
        exported[module] = entries
    homes: dict[tuple[str, str], str] = {}
    for module, entries in exported.items():
        for e in entries:
            homes.setdefault((e.origin, e.name), module)
            best = homes[(e.origin, e.name)]
            if _is_prefix(module, e.origin) and (not _is_prefix(best, e.origin) or len(module) > len(best)):
                homes[(e.origin, e.name)] = module
    for entries in exported.values():
        for e in entries:
            e.home = homes[(e.origin, e.name)]
    return exported


def _is_prefix(package: str, module: str) -> bool:
    return module == package or module.startswith(package + ".")


def _order(entry: Entry) -> tuple[int, str]:
    return ({"class": 0, "function": 1, "data": 2}[entry.kind], entry.name)


# --- classes -------------------------------------------------------------------------------------


def _own_doc(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else ""


def _is_dataclass(cls: type) -> bool:
    return dataclasses.is_dataclass(cls)


def _is_namedtuple(cls: type) -> bool:
    return issubclass(cls, tuple) and hasattr(cls, "_fields")


def _section_items(doc: str, titles: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """``name -> (section title, text)`` of the items of the docstring's ``titles`` sections."""
    lines = doc.split("\n")
    out: dict[str, tuple[str, str]] = {}
    for i, line in enumerate(lines):
        if _is_section(lines, i) and line.strip()[:-1] in titles:
            body, _ = _take_indented(lines, i + 1, 0)
            for name, _kind_text, text in _items(textwrap.dedent("\n".join(body)).split("\n")) or []:
                out[name] = (line.strip()[:-1], _item_lines(text))
    return out


def _fields(cls: type) -> list[tuple[str, str, str | None]]:
    """``(name, type, default or None)`` of a dataclass's or NamedTuple's fields, as text."""
    hints = getattr(cls, "__annotations__", {})
    out = []
    if _is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default: str | None = show_value(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = show_value(f.default_factory())
            else:
                default = None
            out.append((f.name, _annotation(f.type), default))
    else:
        defaults = getattr(cls, "_field_defaults", {})
        for name in cls._fields:
            default = show_value(defaults[name]) if name in defaults else None
            out.append((name, _annotation(hints.get(name, "")), default))
    return out


def _raw_func(raw: Any) -> Any:
    if isinstance(raw, property):
        return raw.fget
    if isinstance(raw, functools.cached_property):
        return raw.func
    return getattr(raw, "__func__", raw)


def _protocol_methods(proto: type) -> set[str]:
    return {
        name
        for name, raw in vars(proto).items()
        if (not name.startswith("_") or name == "__call__")
        and (inspect.isfunction(raw) or isinstance(raw, property))
    }


def implemented(cls: type, documented: set[type]) -> list[type]:
    """The documented protocols ``cls`` implements (defines every method of, in project code)."""
    out = []
    for proto in sorted(documented, key=lambda c: c.__qualname__):
        if proto is cls or not getattr(proto, "_is_protocol", False) or getattr(cls, "_is_protocol", False):
            continue
        methods = _protocol_methods(proto)
        if methods and all(any(m in vars(k) for k in cls.__mro__ if _is_project(k)) for m in methods):
            out.append(proto)
    return out


def _members(cls: type, documented: set[type]) -> list[tuple[str, Any, type]]:
    """``(name, raw attribute, defining class)`` of the public methods and properties shown for
    ``cls``: its own and those of undocumented project bases. An undocumented override of a base's
    method (``forward``, ``reset``) or implementation of a protocol's (``__call__`` of a reward) is
    left out: it is documented where it is declared."""
    fielded = _is_dataclass(cls) or _is_namedtuple(cls)
    field_names = {name for name, *_ in _fields(cls)} if fielded else set()
    declared = {m for proto in implemented(cls, documented) for m in _protocol_methods(proto)}
    seen: dict[str, tuple[Any, type]] = {}
    for klass in cls.__mro__:
        if klass is not cls and (not _is_project(klass) or klass in documented):
            continue
        for name, raw in vars(klass).items():
            if name in seen or name in field_names or (name.startswith("_") and name != "__call__"):
                continue
            kinds = (property, classmethod, staticmethod, functools.cached_property)
            if isinstance(raw, kinds) or inspect.isfunction(raw):
                seen[name] = (raw, klass)
    out = []
    for name, (raw, klass) in sorted(seen.items()):
        if not _member_doc(raw):
            later = cls.__mro__[cls.__mro__.index(klass) + 1 :]
            if name in declared or any(name in vars(base) for base in later):
                continue
        out.append((name, raw, klass))
    return out


def _member_doc(raw: Any) -> str:
    """A member's docstring (a property's own, as ``property(doc=...)`` sets it)."""
    return _own_doc(raw if isinstance(raw, property) else _raw_func(raw))


def _member_signature(cls: type, name: str, raw: Any) -> str:
    qual = f"{cls.__name__}.{name}"
    if isinstance(raw, (property, functools.cached_property)):
        sig = _signature(_raw_func(raw))
        ret = (
            ""
            if sig is None or sig.return_annotation is sig.empty
            else f": {_annotation(sig.return_annotation)}"
        )
        return f"property {qual}{ret}"
    if isinstance(raw, classmethod):
        return function_signature(qual, raw.__func__, drop_first=True, prefix="classmethod ")
    if isinstance(raw, staticmethod):
        return function_signature(qual, raw.__func__, prefix="staticmethod ")
    return function_signature(qual, raw, drop_first=True)


def class_signature(cls: type) -> str:
    """``class Name(params)``: the constructor's parameters (or the bases, for a class without one)."""
    if _is_dataclass(cls) or _is_namedtuple(cls) or _constructor_is_project(cls):
        sig = _signature(cls)
        if sig is not None:
            fields = _fields(cls) if _is_dataclass(cls) else []
            defaults = {name: _short(default) for name, _kind, default in fields if default is not None}
            params = _param_texts(sig, drop_first=False, defaults=defaults)
            return _format_call(f"class {cls.__name__}", params, None)
    bases = [b for b in cls.__bases__ if b is not object]
    inner = ", ".join(_base_name(b) for b in bases)
    return f"class {cls.__name__}" + (f"({inner})" if inner else "")


def _constructor_is_project(cls: type) -> bool:
    for klass in cls.__mro__:
        if "__init__" in vars(klass) or "__new__" in vars(klass):
            return _is_project(klass)
    return False


def _base_name(base: type) -> str:
    name = getattr(base, "__qualname__", base.__name__)
    module = getattr(base, "__module__", "")
    if module in ("builtins", "typing") or _is_project(base):
        return name
    return f"{module}.{name}"


# --- pages ---------------------------------------------------------------------------------------


def page_name(module: str) -> str:
    """The page file of a documented module."""
    return f"{module}.md"


def github_anchor(heading: str, used: dict[str, int]) -> str:
    """The anchor a repository host gives a heading (lower case, punctuation dropped, spaces as
    hyphens, ``-1``, ``-2``, ... on repeats); ``used`` counts the page's anchors so far."""
    base = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
    n = used.get(base, 0)
    used[base] = n + 1
    return base if n == 0 else f"{base}-{n}"


@dataclasses.dataclass
class Page:
    """One module's page: its entries and the anchors of their headings."""

    module: str
    entries: list[Entry]
    others: list[Entry]
    anchors: dict[str, str] = dataclasses.field(default_factory=dict)


def plan(exported: dict[str, list[Entry]]) -> tuple[list[Page], dict[str, Target]]:
    """The pages, and every name that can be linked to (by each name it is exported under and
    the one where it is defined) with its target."""
    documented = _documented_classes(exported)
    pages: list[Page] = []
    targets: dict[str, Target] = {}
    for module in MODULES:
        mine = sorted((e for e in exported[module] if e.home == module), key=_order)
        others = sorted((e for e in exported[module] if e.home != module), key=lambda e: e.name)
        page = Page(module, mine, others)
        used: dict[str, int] = {}
        github_anchor(module, used)
        for heading in ("Registered environments", "Contents", "Also exported here"):
            github_anchor(heading, used)
        targets[module] = Target(page_name(module), "")
        for e in mine:
            anchor = github_anchor(e.name, used)
            page.anchors[e.name] = anchor
            targets[e.key] = Target(page_name(module), anchor)
            if e.kind == "class":
                for name, _raw, _klass in _members(e.obj, documented):
                    qual = f"{e.name}.{name}"
                    page.anchors[qual] = github_anchor(qual, used)
                    targets[f"{module}.{qual}"] = Target(page_name(module), page.anchors[qual])
        pages.append(page)
    for module, entries in exported.items():
        for e in entries:
            home = targets[e.key]
            targets.setdefault(f"{module}.{e.name}", home)
            targets.setdefault(f"{e.origin}.{e.name}", home)
            if e.kind == "class":
                for key, t in list(targets.items()):
                    if key.startswith(e.key + "."):
                        targets.setdefault(f"{e.origin}.{key[len(e.key) + 1 :]}", t)
    return pages, targets


def _documented_classes(exported: dict[str, list[Entry]]) -> set[type]:
    return {e.obj for entries in exported.values() for e in entries if e.kind == "class"}


def render_entry(e: Entry, page: Page, targets: dict[str, Target], documented: set[type]) -> str:
    """An entry's section: heading, signature, docstring, fields and members."""
    ctx = Context(targets, page_name(page.module), page.module)
    parts = [f"## {_code(e.name)}"]
    if e.kind == "class":
        cls = e.obj
        ctx.cls = e.name
        parts.append(_fence([class_signature(cls)], "text"))
        bases = [b for b in cls.__bases__ if b not in (object, tuple) and b.__name__ != "Generic"]
        if bases and not _is_namedtuple(cls):
            shown = []
            for b in bases:
                href = ctx.link(f"{b.__module__}.{b.__qualname__}") if _is_project(b) else None
                shown.append(f"[{_code(_base_name(b))}]({href})" if href else _code(_base_name(b)))
            parts.append("Bases: " + ", ".join(shown))
        protos = implemented(cls, documented)
        if protos:
            shown = [
                f"[{_code(pr.__name__)}]({ctx.link(f'{pr.__module__}.{pr.__qualname__}')})" for pr in protos
            ]
            parts.append("Implements: " + ", ".join(shown))
        doc = _own_doc(cls)
        fields = _fields(cls) if _is_dataclass(cls) or _is_namedtuple(cls) else []
        attr_docs = field_docs(cls) if _is_dataclass(cls) else {}
        section_docs = _section_items(doc, ("Args", "Attributes"))
        skip: set[str] = set()
        if fields:
            names = {name for name, *_ in fields}
            for title in ("Args", "Attributes"):
                in_section = {n for n, (t, _) in section_docs.items() if t == title}
                if in_section and in_section <= names:
                    skip.add(title)
        if doc:
            parts.append(render_doc(doc, ctx, frozenset(skip)))
        if fields:
            rows = []
            for name, kind, default in fields:
                text = attr_docs.get(name) or section_docs.get(name, ("", ""))[1]
                meta = _code(kind) + (f", default {_code(default)}" if default is not None else "")
                body = render_doc(text, ctx).replace("\n", "\n  ") if text else ""
                rows.append(f"- **{_code(name)}** ({meta})" + (f": {body}" if body else ""))
            parts.append("**Fields:**\n\n" + "\n".join(rows))
        for name, raw, _klass in _members(cls, documented):
            qual = f"{e.name}.{name}"
            parts.append(f"### {_code(qual)}")
            parts.append(_fence([_member_signature(cls, name, raw)], "text"))
            mdoc = _member_doc(raw)
            if mdoc:
                parts.append(render_doc(mdoc, ctx))
    elif e.kind == "function":
        parts.append(_fence([function_signature(e.name, e.obj)], "text"))
        doc = _own_doc(e.obj)
        if doc:
            parts.append(render_doc(doc, ctx))
    else:
        _where, doc, ann = constant_doc(e.home, e.name)
        parts.append(_fence([show_constant(e.name, ann, e.obj)], "text"))
        if doc:
            parts.append(render_doc(doc, ctx))
    return "\n\n".join(p for p in parts if p)


def entry_doc(e: Entry) -> str:
    """The docstring of an entry (for a constant, its ``#:`` comment)."""
    if e.kind == "data":
        return constant_doc(e.home, e.name)[1]
    return _own_doc(e.obj)


def render_page(page: Page, targets: dict[str, Target], documented: set[type]) -> str:
    """A module's page."""
    ctx = Context(targets, page_name(page.module), page.module)
    mod = importlib.import_module(page.module)
    parts = [
        f"# {_code(page.module)}",
        f"*Generated from the docstrings by `docs/make_api.py`; do not edit. [Index]({INDEX}).*",
    ]
    doc = _own_doc(mod)
    if doc:
        parts.append(render_doc(doc, ctx))
    if page.module in PACKAGES:
        parts.append(registered_envs(page.module, ctx))
    if len(page.entries) > 1:
        links = [f"[{_code(e.name)}](#{page.anchors[e.name]})" for e in page.entries]
        parts.append("## Contents\n\n" + " · ".join(links))
    if page.others:
        rows = ["| Name | Documented in | Summary |", "| --- | --- | --- |"]
        for e in page.others:
            href = ctx.address(targets[e.key])
            rows.append(f"| [{_code(e.name)}]({href}) | {_code(e.home)} | {summary(entry_doc(e), ctx)} |")
        parts.append("## Also exported here\n\n" + "\n".join(rows))
    parts.extend(render_entry(e, page, targets, documented) for e in page.entries)
    return "\n\n".join(parts) + "\n"


def registered_envs(package: str, ctx: Context) -> str:
    """A table of the Gymnasium ids whose entry point is in ``package`` (empty if none)."""
    import gymnasium as gym

    rows = []
    for env_id in sorted(gym.registry):
        spec = gym.registry[env_id]
        entry = spec.entry_point if isinstance(spec.entry_point, str) else ""
        if not entry.startswith(package + "."):
            continue
        cells = []
        for point in (entry, spec.vector_entry_point if isinstance(spec.vector_entry_point, str) else ""):
            dotted = point.replace(":", ".")
            href = ctx.link(dotted)
            shown = _code(dotted.rsplit(".", 1)[-1]) if point else ""
            cells.append(f"[{shown}]({href})" if href else shown)
        rows.append(f"| {_code(env_id)} | {cells[0]} | {cells[1]} | {spec.max_episode_steps} |")
    if not rows:
        return ""
    head = "| Id | Env | Vector env | `max_episode_steps` |\n| --- | --- | --- | --- |\n"
    return "## Registered environments\n\n" + head + "\n".join(rows)


def uncovered() -> list[str]:
    """The public modules of :data:`PACKAGES` not documented, nor inside a documented package."""
    out = []
    for package in PACKAGES:
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, package + "."):
            name = info.name
            if any(part.startswith("_") for part in name.split(".")):
                continue
            if name in MODULES or any(_is_prefix(m, name) and m != package for m in MODULES):
                continue
            if any(m.startswith(name + ".") for m in MODULES):
                continue
            out.append(name)
    return sorted(out)


def render_index(pages: list[Page], targets: dict[str, Target]) -> str:
    """The index page: every module with its summary and names."""
    parts = [
        "# API reference",
        "Generated from the docstrings by [`docs/make_api.py`](../make_api.py); do not edit the pages "
        f"by hand. After changing a docstring or a public name, regenerate them:\n\n"
        f"```text\n{COMMAND}\n```\n\n"
        "(`tests/test_api_docs.py` fails while they are stale.) Each module's page has its "
        "docstring, then every public name (its `__all__`) defined there: signature, docstring, "
        "dataclass fields with their types, defaults and docs, public methods.",
    ]
    for package in PACKAGES:
        lines = [f"## {_code(package)}", ""]
        for page in pages:
            if not _is_prefix(package, page.module):
                continue
            ctx = Context(targets, INDEX, page.module)
            mod_summary = summary(_own_doc(importlib.import_module(page.module)), ctx)
            lines.append(
                f"- [{_code(page.module)}]({page_name(page.module)})"
                + (f": {mod_summary}" if mod_summary else "")
            )
            names = [
                f"[{_code(e.name)}]({page_name(page.module)}#{page.anchors[e.name]})" for e in page.entries
            ]
            if names:
                lines.append("  " + " · ".join(names))
        parts.append("\n".join(lines))
    rest = uncovered()
    if rest:
        parts.append(
            "## Not covered\n\nInternal modules (command-line plumbing, checkpoints, process groups, "
            "the parts the documented packages are built from); read their docstrings in the "
            "source: " + ", ".join(_code(m) for m in rest) + "."
        )
    return "\n\n".join(parts) + "\n"


def render_all() -> dict[str, str]:
    """Every page: file name (under :data:`OUT_DIR`) -> Markdown."""
    exported = collect()
    pages, targets = plan(exported)
    documented = _documented_classes(exported)
    out = {INDEX: render_index(pages, targets)}
    for page in pages:
        out[page_name(page.module)] = render_page(page, targets, documented)
    return out


def iter_documented() -> Iterator[tuple[str, str]]:
    """``(full name, docstring)`` of every documented module, name and shown member."""
    exported = collect()
    pages, _targets = plan(exported)
    documented = _documented_classes(exported)
    for page in pages:
        yield page.module, _own_doc(importlib.import_module(page.module))
        for e in page.entries:
            yield e.key, entry_doc(e)
            if e.kind == "class":
                for name, raw, _klass in _members(e.obj, documented):
                    yield f"{e.key}.{name}", _member_doc(raw)


def stale(pages: dict[str, str], out_dir: Path = OUT_DIR) -> list[str]:
    """The page files that differ from ``pages`` (missing, changed or extra)."""
    on_disk = {p.name for p in out_dir.glob("*.md")} if out_dir.is_dir() else set()
    changed = [
        name
        for name, text in pages.items()
        if not (out_dir / name).is_file() or (out_dir / name).read_text() != text
    ]
    return sorted(set(changed) | (on_disk - set(pages)))


def main(argv: list[str] | None = None) -> int:
    """Write the pages (or, with ``--check``, report the stale ones and exit 1)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that docs/api/ is up to date")
    args = parser.parse_args(argv)
    pages = render_all()
    bad = stale(pages)
    if args.check:
        if bad:
            print(f"docs/api/ is stale ({', '.join(bad)}): regenerate it with\n    {COMMAND}")
            return 1
        print(f"docs/api/ is up to date ({len(pages)} pages)")
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in bad:
        path = OUT_DIR / name
        if name in pages:
            path.write_text(pages[name])
        else:
            path.unlink()
    print(f"wrote {len(bad)} of {len(pages)} pages in {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
