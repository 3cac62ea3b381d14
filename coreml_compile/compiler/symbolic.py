"""Symbolic dimensions: what a dynamic dimension is in the IR, and shape rules on them.

A dimension is an int, or a string holding an integer expression over named symbols, as
torch.export prints them: ``"s27"``, ``"2*s27"``, ``"((s27 - 1)//2) + 1"``. The frontend
copies them from the export's fake tensors; a :class:`Symbol` (the graph's
``symbols``) says each one's range.

Shape rules stay the op records' kernels: :func:`infer` runs a kernel on fake tensors
whose sizes are torch ``SymInt``\\ s of a fresh ``ShapeEnv``, so the output shapes come
out as expressions over the same symbols. Nothing here re-states an op's shape rule.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

Dim = int | str

_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
# Functions torch's printer may use in an expression, as Python can evaluate them.
_FUNCTIONS = {"Max": max, "Min": min, "Mod": lambda a, b: a % b, "FloorDiv": lambda a, b: a // b}


class Specialised(NotImplementedError):
    """An op's shape rule does not hold for every size of a dynamic dimension."""


class Expr(str):
    """A size in an op's attributes that depends on dynamic dimensions (``view``'s
    ``[1, s27, 3, 4, 8]``). The kernel sees it as a number once the symbols are known,
    the lowering as a MIL value computed from the inputs' shapes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Expr({str(self)!r})"


def resolve(value: Any, values: Mapping[str, Any]) -> Any:
    """``value`` (an attribute) with every :class:`Expr` in it evaluated on ``values``
    (ints, or SymInts while inferring shapes)."""
    if isinstance(value, Expr):
        return _compiled(str(value))(values)
    if isinstance(value, list | tuple):
        return type(value)(resolve(v, values) for v in value)
    if isinstance(value, dict):
        return {k: resolve(v, values) for k, v in value.items()}
    return value


def has_expr(value: Any) -> bool:
    if isinstance(value, Expr):
        return True
    if isinstance(value, list | tuple):
        return any(has_expr(v) for v in value)
    if isinstance(value, dict):
        return any(has_expr(v) for v in value.values())
    return False


def expr_names(value: Any) -> set[str]:
    """The symbols the :class:`Expr` values in an attribute depend on."""
    if isinstance(value, Expr):
        return names(value)
    if isinstance(value, list | tuple):
        return set().union(*(expr_names(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return expr_names(list(value.values()))
    return set()


@dataclass(frozen=True)
class Symbol:
    """A dynamic dimension's range (``max`` None: unbounded)."""

    name: str
    min: int
    max: int | None
    # The size traced with: the default shape a package declares.
    example: int | None = None

    def contains(self, size: int) -> bool:
        return size >= self.min and (self.max is None or size <= self.max)

    def __str__(self) -> str:
        return f"{self.min}..{'' if self.max is None else self.max}"


# Every symbol a frontend has declared, by name: shape inference needs their ranges
# (``x[:, :s]`` on 64 columns has s columns only if s <= 64) but sees only types.
_DECLARED: dict[str, Symbol] = {}


def declare(symbols: Mapping[str, Symbol]) -> None:
    """Make symbols' ranges known to :func:`infer` (torch's names are unique per process)."""
    _DECLARED.update(symbols)


def is_symbolic(dim: Dim) -> bool:
    return not isinstance(dim, int)


def names(dim: Dim) -> set[str]:
    """The symbols a dimension depends on."""
    if isinstance(dim, int):
        return set()
    return {n for n in _NAME.findall(dim) if n not in _FUNCTIONS}


def evaluate(dim: Dim, values: Mapping[str, int]) -> int:
    """A dimension's size, given each symbol's value."""
    if isinstance(dim, int):
        return dim
    return int(_compiled(dim)(values))


@functools.cache
def _compiled(expr: str) -> Callable[[Mapping[str, int]], Any]:
    tree = ast.parse(expr, mode="eval")
    _check_expression(tree.body, expr)
    code = compile(tree, "<dim>", "eval")
    return lambda values: eval(code, {"__builtins__": {}}, {**_FUNCTIONS, **values})  # noqa: S307


_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod)


def _is_leaf(node: ast.AST) -> bool:
    """An int literal or a plain name (no dunder tricks)."""
    if isinstance(node, ast.Constant):
        return type(node.value) is int
    return isinstance(node, ast.Name) and not node.id.startswith("_")


def _check_expression(node: ast.AST, text: str) -> None:
    """Integer arithmetic over names, and nothing else: a dimension read from a package
    is untrusted text, and evaluating it must not be able to do anything but count."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, _OPERATORS):
        _check_expression(node.left, text)
        _check_expression(node.right, text)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        _check_expression(node.operand, text)
    elif _is_leaf(node):
        pass
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        for arg in node.args:
            _check_expression(arg, text)
    else:
        raise ValueError(f"not a size expression: {text!r}")


def bind(declared: Sequence[Dim], actual: Sequence[int], values: dict[str, int]) -> str | None:
    """Match a concrete shape to a declared one, binding its symbols in ``values``.

    Returns None if they agree, else what differs (for an error message).
    """
    if len(declared) != len(actual):
        return f"rank {len(actual)}, expected {len(declared)}"
    for axis, (want, got) in enumerate(zip(declared, actual, strict=True)):
        if isinstance(want, int) and want != got:
            return f"dimension {axis} is {got}, expected {want}"
    return bind_shapes({"": declared}, {"": actual}, values)


def bind_shapes(
    declared: Mapping[str, Sequence[Dim]],
    actual: Mapping[str, Sequence[int]],
    values: dict[str, int] | None = None,
) -> str | None:
    """Bind the symbols of several inputs' declared shapes from their actual sizes, and
    check every dimension that is an expression of them; static sizes are not checked.

    Plain symbols bind first, wherever they appear; a symbol seen only in a derived
    dimension ``a*s + b`` is solved from it (a size no whole ``s`` gives is refused).
    Returns None if the shapes agree, else the first disagreement, naming the inputs
    (those named "" are not named).
    """
    values = {} if values is None else values
    where: dict[str, str] = {}

    def place(name: str, axis: int) -> str:
        return f"input {name} dimension {axis}" if name else f"dimension {axis}"

    for derived in (False, True):
        for name, dims in declared.items():
            if name not in actual:
                continue
            for axis, (want, got) in enumerate(zip(dims, actual[name], strict=False)):
                if isinstance(want, int):
                    continue
                got, needed = int(got), names(want)
                plain = want in needed
                if plain and not derived and want not in values:
                    values[want], where[want] = got, place(name, axis)
                elif derived and not plain and not needed <= values.keys():
                    reason = _solve(want, got, values)
                    if reason:
                        at = f"input {name}: " if name else ""
                        return f"{at}dimension {axis} is {got}, but the model takes only {reason}"
                    where.update({n: place(name, axis) for n in needed})
                elif derived and needed <= values.keys():
                    expected = evaluate(want, values)
                    if expected != got:
                        at = f"input {name}: " if name else ""
                        sources = ", ".join(where.get(n, n) for n in sorted(needed))
                        return (
                            f"{at}dimension {axis} is {got}, but the model ties it to "
                            f"{sources} and needs {expected} here"
                        )
    return None


def _solve(dim: str, size: int, values: dict[str, int]) -> str | None:
    """Bind the one symbol of ``dim`` = ``a*s + b`` from its size; what sizes it takes if
    no whole s gives ``size`` (None once bound, or if ``dim`` is not of that form)."""
    found = names(dim)
    linear_form = linear(dim, next(iter(found))) if len(found) == 1 else None
    if linear_form is None:
        return None
    a, b = linear_form
    if (size - b) % a:
        offset = f" plus {b}" if b else ""
        return f"sizes {dim} (a multiple of {a}{offset})"
    (name,) = found
    values[name] = (size - b) // a
    return None


def infer(
    kernel: Callable[[list[Any], Mapping[str, Any]], Sequence[Any]],
    shapes: Sequence[Any],
    extra_names: Iterable[str] = (),
) -> list[Any]:
    """Run ``kernel(tensors, symbols)`` on fake tensors of symbolic ``shapes``; returns
    its output tensors, each with a function turning its sizes back into IR dimensions.

    ``shapes`` holds ``(dims, torch dtype)`` pairs or None (an absent input); the kernel
    gets each symbol (those of the shapes and ``extra_names``) as a SymInt.
    """
    import torch
    from torch._dispatch.python import enable_python_dispatcher
    from torch._dynamo.source import ConstantSource
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StrictMinMaxConstraint
    from torch.utils._sympy.numbers import int_oo
    from torch.utils._sympy.value_ranges import ValueRanges

    env = ShapeEnv()
    symbols: dict[str, Any] = {}
    extra_names = set(extra_names)
    wanted = {n for spec in shapes if spec for d in spec[0] for n in names(d)} | extra_names
    used: set[int] = set()
    for i, name in enumerate(sorted(wanted)):
        known = _DECLARED.get(name)
        low = max(known.min, 2) if known else 2
        high = known.max if known and known.max is not None else None
        # Distinct example sizes inside each range, so no two symbols look equal.
        hint = (
            known.example
            if known and known.example
            else max(low, min(1009 + 16 * i, high or 2**31))
        )
        while hint in used and (high is None or hint < high):
            hint += 1
        used.add(hint)
        constraint = None
        if known is not None:
            constraint = StrictMinMaxConstraint(
                vr=ValueRanges(known.min, known.max if known.max is not None else int_oo),
                warn_only=False,
            )
        sym = env.create_symbol(
            hint, ConstantSource(name), dynamic_dim=DimDynamic.DYNAMIC, constraint_dim=constraint
        )
        symbols[name] = env.create_symintnode(sym, hint=hint)
    back = {str(node.node.expr): name for name, node in symbols.items()}
    # Sizes passed as SymInts (Expr attributes: upsample's output_size) reach composite
    # ops' C++ kernels, which want concrete ones; torch's Python decompositions take
    # SymInts, as torch.export runs them. Only then: elsewhere the C++ rules' refusals
    # (Specialised for float scale factors) are kept.
    dispatcher = enable_python_dispatcher() if extra_names else contextlib.nullcontext()
    with FakeTensorMode(shape_env=env, allow_non_fake_inputs=True), dispatcher:
        tensors = [
            None
            if spec is None
            else torch.empty(
                [d if isinstance(d, int) else _as_symint(d, symbols) for d in spec[0]],
                dtype=spec[1],
            )
            for spec in shapes
        ]
        outputs = kernel(tensors, symbols)
    fixed = [
        back.get(str(sym), str(sym))
        for sym, value in env.replacements.items()
        if str(sym) in back and value.is_number
    ]
    for guard in env.guards:
        # Eq(some size, 256): the kernel fixed a size it could not keep symbolic.
        expr = guard.expr
        if type(expr).__name__ == "Equality" and (expr.lhs.is_number or expr.rhs.is_number):
            fixed += [back.get(str(sym), str(sym)) for sym in expr.free_symbols]
    if fixed:
        # The kernel's shape rule needed the sizes themselves (a float scale factor
        # rounds them): its result holds only for the example sizes.
        raise Specialised(f"the shape rule needs a fixed size for {', '.join(sorted(fixed))}")
    return [(out, lambda size, b=back: to_dim(size, b)) for out in outputs]


def _as_symint(dim: str, symbols: Mapping[str, Any]) -> Any:
    # torch prints expressions as Python would write them: evaluating the text on SymInts
    # rebuilds the same expression in the new shape environment.
    return _compiled(dim)(symbols)


def to_dim(size: Any, rename: Mapping[str, str] | None = None) -> Dim:
    """A torch size (int or SymInt) as an IR dimension, symbols renamed by ``rename``."""
    import torch

    if not isinstance(size, torch.SymInt):
        return int(size)
    expr = size.node.expr
    if expr.is_number:
        return int(expr)
    if rename:
        import sympy

        expr = expr.xreplace(
            {s: sympy.Symbol(rename.get(str(s), str(s))) for s in expr.free_symbols}
        )
    return str(expr)


def equal(a: Dim, b: Dim) -> bool:
    """True if two dimensions are the same size for every value of their symbols."""
    if a == b:
        return True
    if isinstance(a, int) and isinstance(b, int):
        return False
    import sympy

    return sympy.simplify(_sympy(a) - _sympy(b)) == 0


def ratio(a: Dim, b: Dim) -> Fraction | None:
    """``a / b`` if it is the same number for every value of their symbols (``8*s0`` over
    ``s0`` is 8), else None."""
    if isinstance(a, int) and isinstance(b, int):
        return Fraction(a, b) if b else None
    import sympy

    try:
        quotient = sympy.simplify(_sympy(a) / _sympy(b))
    except (TypeError, ValueError, sympy.SympifyError):
        return None  # torch's float arithmetic (TruncToInt(1.5*ToFloat(s0))): not a ratio
    if not quotient.is_Rational:
        return None
    return Fraction(int(quotient.p), int(quotient.q))


def minimum(dim: Dim) -> int | None:
    """The smallest size a dimension takes: an int's own; a declared symbol's, or a
    linear one's ``a*min + b`` (a > 0); None when unknown."""
    if isinstance(dim, int):
        return dim
    (name, *more) = sorted(names(dim)) or [None]
    symbol = _DECLARED.get(name) if name and not more else None
    if symbol is None:
        return None
    if dim == name:
        return symbol.min
    coefficients = linear(dim, name)
    if coefficients is None or coefficients[0] <= 0:
        return None
    return coefficients[0] * symbol.min + coefficients[1]


def linear(dim: Dim, name: str) -> tuple[int, int] | None:
    """(a, b) with ``dim == a*name + b`` for integers a != 0 and b, else None."""
    import sympy

    symbol = sympy.Symbol(name, integer=True, positive=True)
    expr = sympy.expand(_sympy(dim))
    if not isinstance(dim, str) or expr.free_symbols != {symbol}:
        return None
    a, b = expr.coeff(symbol, 1), expr.coeff(symbol, 0)
    if not (a.is_Integer and b.is_Integer) or a == 0 or sympy.expand(a * symbol + b - expr) != 0:
        return None
    return int(a), int(b)


def _sympy(dim: Dim) -> Any:
    import sympy

    if isinstance(dim, int):
        return sympy.Integer(dim)
    local = {n: sympy.Symbol(n, integer=True, positive=True) for n in names(dim)}
    local.update({"FloorDiv": lambda a, b: sympy.floor(a / b), "Mod": sympy.Mod})
    return sympy.sympify(dim, locals=local)
