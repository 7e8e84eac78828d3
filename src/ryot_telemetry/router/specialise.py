"""Specialised copies of one function: the variants of a hot loop generated from its one definition.

``specialise(fn, flag=value, ...)`` compiles ``fn``'s own source again with each named parameter read as a
constant. CPython drops the branches a constant decides (``if False:`` leaves no bytecode, ``if True:`` no test),
so each copy runs only its own steps, with no per-iteration test of a flag, while the code is written, linted,
type-checked and read once. The copy keeps ``fn``'s signature (the flags are then ignored), file name and line
numbers, so tracebacks and coverage point at the one definition. Where the source cannot be had (a zip import,
bytecode only) the copy is ``fn`` itself, which tests the flags as it runs: slower, never different.
"""

from __future__ import annotations
import __future__

import ast
import inspect
import logging
import textwrap
from collections.abc import Callable
from typing import Any, TypeVar

_log = logging.getLogger("ryot_telemetry")

F = TypeVar("F", bound=Callable[..., Any])


class _Constants(ast.NodeTransformer):
    """Reads each flag as its constant and keeps, of an ``if`` whose test the flags decide, only the branch taken
    (the compiler would leave a line-number NOP per dropped test in the loop: a dispatch per iteration)."""

    def __init__(self, constants: dict[str, bool]) -> None:
        self.constants = constants

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if isinstance(node.ctx, ast.Load) and node.id in self.constants:
            return ast.copy_location(ast.Constant(self.constants[node.id]), node)
        if node.id in self.constants:  # a flag assigned to would no longer be one: refuse rather than guess
            raise ValueError(f"{node.id} is assigned to in the function; it cannot be read as a constant")
        return node

    def visit_Try(self, node: ast.Try) -> ast.AST:
        """A ``try`` takes its first statement's line: the compiler then needs no NOP to mark the ``try`` line, a
        dispatch saved each time the block is entered (every chunk, in a hot loop)."""
        self.generic_visit(node)
        node.lineno = node.body[0].lineno
        return node

    def visit_If(self, node: ast.If) -> ast.AST | list[ast.stmt]:
        self.generic_visit(node)
        decided = _decided(node.test)
        if decided is None:
            node.test = _open(node.test)
            return node
        return node.body if decided else node.orelse

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        if getattr(node, "body", None) == []:  # every statement of a block dropped: it still needs one
            node.body = [ast.copy_location(ast.Pass(), node)]  # type: ignore[attr-defined]
        return node


def _open(test: ast.expr) -> ast.expr:
    """A test the constants leave open, without them: ``True and x`` tests ``x`` (``False or x`` likewise). Only
    for a test (an ``if``), where truth alone matters: as a value, ``x and True`` is not ``x``."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return ast.copy_location(ast.UnaryOp(op=test.op, operand=_open(test.operand)), test)
    if isinstance(test, ast.BoolOp):
        neutral = isinstance(test.op, ast.And)  # True is neutral in ``and``, False in ``or``
        values = [_open(v) for v in test.values if _decided(v) is not neutral]
        return values[0] if len(values) == 1 else ast.copy_location(ast.BoolOp(op=test.op, values=values), test)
    return test


def _decided(test: ast.expr) -> bool | None:
    """The truth of ``test`` when constants alone decide it (``not``, ``and``, ``or`` of constants), else None."""
    if isinstance(test, ast.Constant):
        return bool(test.value)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _decided(test.operand)
        return None if inner is None else not inner
    if isinstance(test, ast.BoolOp):
        values = [_decided(v) for v in test.values]
        if isinstance(test.op, ast.And):
            return False if False in values else (True if None not in values else None)
        return True if True in values else (False if None not in values else None)
    return None


def specialise(fn: F, **flags: bool) -> F:
    """``fn`` compiled with each of ``flags`` (parameters of ``fn``) read as the given constant."""
    try:
        params = inspect.signature(fn).parameters
        unknown = sorted(set(flags) - set(params))
        if unknown:
            raise ValueError(f"{fn.__qualname__} has no parameter {', '.join(unknown)}")
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):  # no source to compile again: the general one serves
        _log.debug("ryot-telemetry: no source for %s; using it unspecialised", fn.__qualname__, exc_info=True)
        return fn
    (definition,) = tree.body
    if not isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef)) or definition.decorator_list:
        raise ValueError(f"{fn.__qualname__}: only an undecorated function can be specialised")
    if fn.__code__.co_freevars:  # compiled again at module level, its free names would be read as globals
        raise ValueError(f"{fn.__qualname__}: a closure cannot be specialised")
    _Constants(dict(flags)).visit(definition)  # raises ValueError for a flag the function assigns to
    suffix = "_".join(f"{k}_{int(v)}" for k, v in sorted(flags.items()))
    definition.name = f"{fn.__name__}__{suffix}"
    ast.increment_lineno(tree, fn.__code__.co_firstlineno - 1)
    try:
        future = fn.__code__.co_flags & __future__.annotations.compiler_flag
        code = compile(tree, fn.__code__.co_filename, "exec", flags=future, dont_inherit=True)
        namespace: dict[str, Any] = {}
        exec(code, fn.__globals__, namespace)  # fn's own source, with constants for flags
        copy: F = namespace[definition.name]
    except Exception:  # a copy is only ever faster: where one cannot be made, the one definition serves
        _log.debug("ryot-telemetry: could not specialise %s; using it unspecialised", fn.__qualname__, exc_info=True)
        return fn
    copy.__qualname__ = f"{fn.__qualname__}[{suffix}]"
    copy.__module__ = fn.__module__
    copy.__doc__ = fn.__doc__
    return copy
