"""Sandboxed offer templates: jinja2 with a small, data-only language.

An offer's content is {channel: {field: template}}; each field is a jinja2 template rendered
with two variables, `profile` ({"id", "traits", "computed_traits", "scores"}) and `offer` (the
offer's plain fields: id, key, name, value, cost, tags, valid_until …). Fields named `html` or
ending in `_html` are HTML: every value printed in them is escaped.

What a template can do:

- print values, `{{ profile.traits.first_name }}`, and test them, `{% if … %}`;
- loop, `{% for item in profile.traits.basket %}` (with `loop.index`, `loop.first`, …);
- use the operators and a list of data-only filters (`FILTERS`: default, upper, round, join,
  replace, format, truncate, tojson …) and every test (`is defined`, `is number` …).

What it cannot do, refused when the offer is saved (`check_template`) and again at render:

- read attributes: `a.b` and `a["b"]` read the *keys* of mappings (and indexes of lists), never
  Python attributes, so `''.__class__`, `cycler.__init__.__globals__` and the like have nothing
  to reach (a `SecurityError`, reported as a `UserError`); there are no globals (no `range`,
  `cycler`, `lipsum`, `namespace`) and nothing can be called but `loop.cycle` and
  `loop.changed`;
- `{% set %}`, `{% with %}`, `{% macro %}`, `{% call %}`, `{% include %}`, `{% import %}`,
  `{% extends %}`, `{% block %}`, `{% autoescape %}` and recursive loops;
- name variables other than `profile`, `offer`, `loop` and its own loop variables;
- grow without bound: a template is at most `MAX_TEMPLATE` characters, every value it computes
  and every rendered field at most `MAX_OUTPUT`, a render at most `MAX_ITERATIONS` loop
  iterations and `MAX_WORK` characters computed in all (`'x' * 10**9`, `2 ** 100000`, padded
  `format`s and chains of `replace` are refused before they allocate);
- print profile data unescaped in HTML fields (there is no `| safe`).

Missing values: looking up a key that is not there (or is null) gives an *undefined* value that
is false in `{% if %}`, empty in `{% for %}`, replaced by `| default("…")`, and chains (`a.b.c`
with no `a` is undefined too) — but printing one fails the render (`UserError: 'first_name' is
not set`). So a message never goes out with a blank where a name should be: the decision
pipeline skips the offer for that person, with the reason logged, and templates spell out what
is optional with `| default(…)` or `{% if … is defined %}`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from jinja2 import Template, Undefined, nodes, pass_context
from jinja2.exceptions import (
    SecurityError,
    TemplateError,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.filters import FILTERS as JINJA_FILTERS
from jinja2.runtime import Context, LoopContext, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from cdp.errors import UserError

MAX_TEMPLATE = 100_000
"""Characters of one template (one field of one channel)."""
MAX_OUTPUT = 200_000
"""Characters of one rendered field, and of any string or list a template computes."""
MAX_ITERATIONS = 10_000
"""Loop iterations of one render of one field, in all loops together."""
MAX_WORK = 2_000_000
"""Characters that concatenation, operators and filters may produce in one render, in all."""
MAX_INT_BITS = 4096
"""Integers a template computes (`*`, `**`) stay below 2 ** this."""
MAX_FORMAT_WIDTH = 200
"""The largest width or precision in a `format` / `%` pattern."""
VARIABLES = ("profile", "offer")

FILTERS = (
    "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "filesizeformat",
    "first", "float", "forceescape", "format", "groupby", "int", "items", "join", "last",
    "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace",
    "reverse", "round", "select", "selectattr", "sort", "string", "striptags", "sum", "title",
    "tojson", "trim", "truncate", "unique", "upper", "urlencode", "wordcount",
)  # fmt: skip
"""The filters templates may use. Left out: `attr` (attributes), `safe` (printing profile data
unescaped in HTML), `batch`, `slice`, `center`, `indent`, `wordwrap`, `urlize` and `pprint`
(their arguments can multiply the size of a value) and `random`."""
LOOP_ATTRIBUTES = frozenset(
    {
        "index", "index0", "revindex", "revindex0", "first", "last", "length", "depth",
        "depth0", "previtem", "nextitem", "cycle", "changed",
    }
)  # fmt: skip
_ITER = "cdp_loop_items"
_CONCAT = "cdp_concat"
_STATEMENTS: dict[type[nodes.Node], str] = {
    nodes.Assign: "{% set %}",
    nodes.AssignBlock: "{% set %}",
    nodes.With: "{% with %}",
    nodes.Macro: "{% macro %}",
    nodes.CallBlock: "{% call %}",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from … import %}",
    nodes.Extends: "{% extends %}",
    nodes.Block: "{% block %}",
    nodes.Scope: "{% autoescape %}",
    nodes.ScopedEvalContextModifier: "{% autoescape %}",
    nodes.EvalContextModifier: "{% autoescape %}",
}
_ALLOWED: tuple[type[nodes.Node], ...] = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.For, nodes.If, nodes.FilterBlock,
    nodes.Name, nodes.Const, nodes.List, nodes.Tuple, nodes.Dict, nodes.Pair, nodes.Keyword,
    nodes.CondExpr, nodes.Filter, nodes.Test, nodes.Getattr, nodes.Getitem, nodes.Slice,
    nodes.Concat, nodes.Compare, nodes.Operand, nodes.BinExpr, nodes.UnaryExpr, nodes.Call,
)  # fmt: skip
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([diouxXeEfFgGcrsa%])?")


class TooLarge(SecurityError):
    """A template grew a value, its output or its work past the limits."""


class Missing(Undefined):
    """A value that is not there: false, empty, chainable, and an error when printed."""

    __slots__ = ()

    def __str__(self) -> str:
        self._fail_with_undefined_error()
        return ""  # pragma: no cover - the line above raises


# --- the budget of one render ------------------------------------------------------------------


class _Budget:
    __slots__ = ("iterations", "work")

    def __init__(self) -> None:
        self.iterations = 0
        self.work = 0

    def iterate(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_ITERATIONS:
            raise TooLarge(f"more than {MAX_ITERATIONS} loop iterations")

    def produce(self, size: int) -> None:
        if size > MAX_OUTPUT:
            raise TooLarge(f"a value of more than {MAX_OUTPUT} characters or items")
        self.work += size
        if self.work > MAX_WORK:
            raise TooLarge(f"more than {MAX_WORK} characters computed")


_budget: ContextVar[_Budget | None] = ContextVar("cdp_template_budget", default=None)


def _current() -> _Budget:
    budget = _budget.get()
    return _Budget() if budget is None else budget  # None: outside render_content


def _sized(value: Any) -> Any:
    if isinstance(value, str | list | tuple | dict):
        _current().produce(len(value))
    return value


# --- filters and operators ---------------------------------------------------------------------


def _guard(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` as a filter that is never run at compile time and whose result is measured."""
    passes = getattr(getattr(func, "jinja_pass_arg", None), "name", None)

    @pass_context
    def guarded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        if passes == "context":
            result = func(context, value, *args, **kwargs)
        elif passes == "eval_context":
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif passes == "environment":
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        return _sized(result)

    guarded.__name__ = getattr(func, "__name__", "filter")
    return guarded


def _replace(context: Context, s: Any, old: Any, new: Any, count: Any = None) -> Any:
    text, old_text, new_text = str(s), str(old), str(new)
    times = text.count(old_text) if old_text else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    _current().produce(len(text) + times * max(len(new_text) - len(old_text), 0))
    return JINJA_FILTERS["replace"](context.eval_ctx, s, old, new, count)


def _join(context: Context, value: Any, d: Any = "", attribute: Any = None) -> Any:
    items = list(value) if not isinstance(value, Undefined) else []
    if attribute is not None:
        getter = context.environment.getitem
        items = [getter(item, attribute) for item in items]
    sizes = sum(len(str(item)) for item in items)
    _current().produce(sizes + max(len(items) - 1, 0) * len(str(d)))
    return JINJA_FILTERS["join"](context.eval_ctx, items, d)


def _check_printf(pattern: str) -> None:
    for match in _PRINTF.finditer(pattern):
        for number in match.group(1, 2):
            if number == "*":
                raise SecurityError("'*' widths are not allowed in format patterns")
            if number is not None and int(number) > MAX_FORMAT_WIDTH:
                raise TooLarge(f"format widths and precisions are at most {MAX_FORMAT_WIDTH}")


def _format(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
    _check_printf(str(value))
    return JINJA_FILTERS["format"](value, *args, **kwargs)


def _tojson(context: Context, value: Any) -> Any:
    return JINJA_FILTERS["tojson"](context.eval_ctx, value)


@pass_context
def _loop_items(context: Context, iterable: Any) -> Iterator[Any]:
    budget = _current()
    for item in iterable:
        budget.iterate()
        yield item


@pass_context
def _concat(context: Context, items: list[Any]) -> Any:
    parts = [item if isinstance(item, str) else str(item) for item in items]
    _current().produce(sum(len(part) for part in parts))
    return markup_join(parts) if context.eval_ctx.autoescape else str_join(parts)


def _filters() -> dict[str, Callable[..., Any]]:
    found = {name: _guard(JINJA_FILTERS[name]) for name in FILTERS}
    for name, func in (("replace", _replace), ("join", _join), ("format", _format)):
        found[name] = _guard_bounded(func)
    found["tojson"] = _guard_bounded(_tojson)
    found[_ITER] = _loop_items
    found[_CONCAT] = _concat
    return found


def _guard_bounded(func: Callable[..., Any]) -> Callable[..., Any]:
    @pass_context
    def guarded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        return _sized(func(context, value, *args, **kwargs))

    return guarded


def _repeat_size(seq: Any, times: Any) -> int | None:
    if isinstance(seq, str | list | tuple) and isinstance(times, int):
        return len(seq) * max(times, 0)
    return None


def _multiply(left: Any, right: Any) -> Any:
    size = _repeat_size(left, right)
    size = _repeat_size(right, left) if size is None else size
    if size is not None:
        _current().produce(size)
    elif isinstance(left, int) and isinstance(right, int):
        _check_bits(abs(left).bit_length() + abs(right).bit_length())
    return left * right


def _power(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        _check_bits(abs(left).bit_length() * right)
    if isinstance(left, float | int) and isinstance(right, float | int):
        try:
            return left**right
        except OverflowError:
            raise TooLarge("a number too large") from None
    return left**right


def _add(left: Any, right: Any) -> Any:
    if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
        _current().produce(len(left) + len(right))
    return left + right


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):  # printf-style formatting
        _check_printf(left)
        return _sized(left % right)
    return left % right


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise TooLarge(f"numbers are limited to {MAX_INT_BITS} bits")


# --- the environment ---------------------------------------------------------------------------


class OfferSandbox(ImmutableSandboxedEnvironment):
    """A sandbox where templates read data and nothing else (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, html: bool) -> None:
        super().__init__(autoescape=html, undefined=Missing, auto_reload=False, cache_size=0)
        self.globals.clear()
        self.filters = _filters()
        self.binop_table = {
            **self.binop_table,
            "*": _multiply,
            "**": _power,
            "+": _add,
            "%": _modulo,
        }

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`a.b`: the key `b` of the mapping `a`; never a Python attribute (but `loop.*`)."""
        if not isinstance(attribute, str) or attribute.startswith("_"):
            raise SecurityError(f"templates cannot read {attribute!r}")
        if isinstance(obj, Undefined):
            return obj  # chains: a missing value's parts are missing
        if isinstance(obj, Mapping):
            return self._key(obj, attribute)
        if isinstance(obj, LoopContext) and attribute in LOOP_ATTRIBUTES:
            return getattr(obj, attribute)
        if type(obj).__name__ == "_GroupTuple" and attribute in ("grouper", "list"):
            return getattr(obj, attribute)  # what | groupby gives
        raise SecurityError(
            f"templates cannot read {attribute!r} of a {_kind(obj)}: they read the keys of "
            "mappings only (use filters such as | upper on values)"
        )

    def getitem(self, obj: Any, argument: Any) -> Any:
        """`a[k]`: a key of a mapping, or an index or slice of a list or string."""
        if isinstance(obj, Undefined):
            return obj
        if isinstance(obj, Mapping):
            if isinstance(argument, str) and argument.startswith("_"):
                raise SecurityError(f"templates cannot read {argument!r}")
            return self._key(obj, argument)
        if isinstance(obj, str | list | tuple) and (
            isinstance(argument, slice)
            or (isinstance(argument, int) and not isinstance(argument, bool))
        ):
            try:
                return _sized(obj[argument]) if isinstance(argument, slice) else obj[argument]
            except IndexError:
                return self.undefined(hint=f"no item {argument}", name=str(argument))
        if isinstance(argument, str):
            return self.getattr(obj, argument)
        raise SecurityError(f"a {_kind(obj)} cannot be indexed with {_kind(argument)}")

    def _key(self, obj: Mapping[Any, Any], key: Any) -> Any:
        """A mapping's value; a missing key, or a null (JSON's "not set"), is undefined."""
        try:
            value = obj[key]
        except (KeyError, TypeError):
            value = None
        if value is None:
            return self.undefined(hint=f"{key!r} is not set", name=str(key))
        return value

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return False  # nothing reaches attributes but `getattr` above

    def is_safe_callable(self, obj: Any) -> bool:
        return getattr(obj, "__self__", None).__class__ is LoopContext and getattr(
            obj, "__name__", None
        ) in ("cycle", "changed")


def _kind(obj: Any) -> str:
    if isinstance(obj, Mapping):
        return "mapping"
    return {str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(obj), type(obj).__name__
    )


_TEXT = OfferSandbox(html=False)
_HTML = OfferSandbox(html=True)


OFFER_VARIABLES = (
    "id", "provider", "key", "name", "value", "cost", "priority", "levers", "tags",
    "valid_from", "valid_until", "budget", "propensity",
)  # fmt: skip
PROFILE_VARIABLES = ("id", "traits", "computed_traits", "scores")


def variables(offer: Mapping[str, Any], profile: Mapping[str, Any]) -> dict[str, Any]:
    """What templates see: `offer` (its plain fields; whole numbers print without ".0") and
    `profile` ({"id", "traits", "computed_traits", "scores"})."""
    shown = {}
    for name in OFFER_VARIABLES:
        value = offer.get(name)
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        shown[name] = value
    person = {name: profile.get(name) for name in PROFILE_VARIABLES}
    for name in PROFILE_VARIABLES[1:]:
        if not isinstance(person[name], Mapping):
            person[name] = {}
    return {"offer": shown, "profile": person}


def is_html(field: str) -> bool:
    return field == "html" or field.endswith("_html")


# --- checking and compiling --------------------------------------------------------------------


class _Rewrite(NodeTransformer):
    """Loops count their iterations; `~` measures what it joins."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _ITER, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        items = nodes.List(list(node.nodes), lineno=node.lineno)
        return nodes.Filter(items, _CONCAT, [], [], None, None, lineno=node.lineno)


def _refuse(ast: nodes.Template) -> None:
    """Raise SecurityError for what offer templates may not contain."""
    bound = set(VARIABLES)
    for node in ast.find_all(nodes.For):
        if node.recursive:
            raise SecurityError("recursive loops are not available in offer templates")
        bound.add("loop")
        bound.update(n.name for n in node.target.find_all(nodes.Name))
        if isinstance(node.target, nodes.Name):
            bound.add(node.target.name)
    every = list(_walk(ast))
    for node in every:  # reaching for Python internals first: that is what an attack does
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise SecurityError(f"templates cannot read {node.attr!r}")
        if (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
            and node.arg.value.startswith("_")
        ):
            raise SecurityError(f"templates cannot read {node.arg.value!r}")
    for node in every:
        statement = _STATEMENTS.get(type(node))
        if statement is not None:
            raise SecurityError(
                f"{statement} is not available in offer templates (they may use {{{{ … }}}}, "
                "{% if %}, {% for %}, {% filter %} and filters)"
            )
        if not isinstance(node, _ALLOWED):
            raise SecurityError(f"{type(node).__name__} is not available in offer templates")
        if isinstance(node, nodes.Call) and not (
            isinstance(node.node, nodes.Getattr)
            and isinstance(node.node.node, nodes.Name)
            and node.node.node.name == "loop"
            and node.node.attr in ("cycle", "changed")
        ):
            raise SecurityError(
                "templates cannot call functions (only loop.cycle and loop.changed); "
                "use filters, e.g. {{ name | upper }}"
            )
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in bound:
            raise SecurityError(
                f"unknown variable {node.name!r}: templates see {' and '.join(VARIABLES)}"
            )
        if isinstance(node, nodes.Filter | nodes.Test) and node.name.startswith("cdp_"):
            raise SecurityError(f"no filter named {node.name!r}")


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    """Every node, inner ones first and in source order (so faults are named as they read)."""
    for child in node.iter_child_nodes():
        yield from _walk(child)
    yield node


@lru_cache(maxsize=2048)
def _compile(source: str, html: bool) -> Template:
    """The checked, compiled template; raises TemplateSyntaxError or SecurityError."""
    if len(source) > MAX_TEMPLATE:
        raise TooLarge(f"a template is at most {MAX_TEMPLATE} characters (got {len(source)})")
    env = _HTML if html else _TEXT
    ast = env.parse(source)
    _refuse(ast)
    rewritten = _Rewrite().visit(ast)
    return env.from_string(rewritten)


def _message(exc: BaseException, source: str) -> str:
    if isinstance(exc, TemplateSyntaxError):
        text = exc.message or "syntax error"
        text = text[0].lower() + text[1:] if text[:1].isupper() and text[1:2].islower() else text
        text = text.rstrip(".")
        return f"{text} (line {exc.lineno})" if "\n" in source.strip() else text
    if isinstance(exc, TooLarge):
        return f"too large: {exc}"
    if isinstance(exc, SecurityError):
        return f"refused by the template sandbox: {exc}"
    if isinstance(exc, UndefinedError):
        return f"{exc.message} (give optional values a | default(…))"
    if isinstance(exc, TemplateError):
        return exc.message or type(exc).__name__
    if isinstance(exc, RecursionError | MemoryError):
        return "too large: the template nests too deep"
    return f"{type(exc).__name__}: {exc}"


def check_template(source: Any, path: str) -> None:
    """Refuse, naming `path`, a template that does not compile or uses what the sandbox does
    not allow (e.g. `content.email.subject: unexpected '}'`)."""
    if not isinstance(source, str):
        raise UserError(f"{path}: expected a template (a string)")
    field = path.rsplit(".", 1)[-1]
    try:
        _compile(source, is_html(field))
    except (TemplateError, RecursionError, MemoryError) as exc:
        raise UserError(f"{path}: {_message(exc, source)}") from None


def render_content(
    content: Mapping[str, str], variables: Mapping[str, Any], path: str = "content"
) -> dict[str, str]:
    """Render every field of `content` ({field: template}) with `variables` (`profile`,
    `offer`); a field that cannot be rendered raises `UserError` naming `path.field`."""
    rendered: dict[str, str] = {}
    for field, source in content.items():
        at = f"{path}.{field}"
        if not isinstance(source, str):
            raise UserError(f"{at}: expected a template (a string)")
        token = _budget.set(_Budget())
        try:
            template = _compile(source, is_html(field))
            rendered[field] = _render(template, variables)
        except (TemplateError, RecursionError, MemoryError) as exc:
            raise UserError(f"{at}: {_message(exc, source)}") from None
        except (ArithmeticError, TypeError, ValueError, LookupError) as exc:
            raise UserError(f"{at}: {_message(exc, source)}") from None
        finally:
            _budget.reset(token)
    return rendered


def _render(template: Template, variables: Mapping[str, Any]) -> str:
    chunks: list[str] = []
    size = 0
    for chunk in template.generate(dict(variables)):
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise TooLarge(f"the rendered text is over {MAX_OUTPUT} characters")
        chunks.append(chunk)
    return "".join(str(c) if isinstance(c, Markup) else c for c in chunks)
