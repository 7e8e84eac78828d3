"""router/specialise.py: copies of one definition with its flags as constants (the stream loop's variants)."""

from __future__ import annotations

import asyncio
import dis
import inspect
import sys
import traceback
from collections.abc import AsyncIterator

import pytest

from ryot_telemetry.router import wrapper
from ryot_telemetry.router.specialise import specialise


def _steps(flag_a: bool, flag_b: bool, items: list[int]) -> list[str]:
    out = []
    for i in items:
        if flag_a:
            out.append(f"a{i}")
        if not flag_a and flag_b:
            out.append(f"b{i}")
        if flag_a or flag_b:
            out.append(f"ab{i}")
        else:
            out.append(f"none{i}")
    return out


def _loads(fn: object) -> set[str]:
    return {i.argval for i in dis.get_instructions(fn) if i.opname.startswith("LOAD_FAST")}  # type: ignore[arg-type]


@pytest.mark.parametrize("a", [False, True])
@pytest.mark.parametrize("b", [False, True])
def test_a_copy_does_what_the_definition_does_without_reading_its_flags(a: bool, b: bool) -> None:
    copy = specialise(_steps, flag_a=a, flag_b=b)
    assert copy is not _steps
    assert copy(a, b, [1, 2]) == _steps(a, b, [1, 2])
    assert copy(not a, not b, [1, 2]) == _steps(a, b, [1, 2])  # the flags passed are ignored: they are constants
    assert {"flag_a", "flag_b"} & _loads(copy) == set()
    assert {"flag_a", "flag_b"} <= _loads(_steps)
    assert not any(i.opname == "NOP" for i in dis.get_instructions(copy))  # no line-number NOP per dropped test
    assert inspect.signature(copy) == inspect.signature(_steps)
    assert copy.__code__.co_filename == _steps.__code__.co_filename
    assert copy.__code__.co_firstlineno == _steps.__code__.co_firstlineno
    assert copy.__qualname__ == f"_steps[flag_a_{int(a)}_flag_b_{int(b)}]"


def _fails(flag: bool) -> None:
    if flag:
        raise ValueError("from the one definition")


def _guarded(flag: bool) -> str:
    try:
        if flag:
            raise KeyError("k")
        return "quiet"
    except KeyError:
        return "caught"


def test_a_copys_traceback_points_at_the_one_definition() -> None:
    copy = specialise(_fails, flag=True)
    with pytest.raises(ValueError) as info:
        copy(False)
    frame = traceback.extract_tb(info.value.__traceback__)[-1]
    _, start = inspect.getsourcelines(_fails)
    assert (frame.filename, frame.lineno) == (__file__, start + 2)
    assert frame.line == 'raise ValueError("from the one definition")'


@pytest.mark.parametrize("flag", [False, True])
def test_a_try_in_a_copy_still_catches_and_needs_no_nop(flag: bool) -> None:
    copy = specialise(_guarded, flag=flag)
    assert copy(not flag) == ("caught" if flag else "quiet")
    assert not any(i.opname == "NOP" for i in dis.get_instructions(copy))
    if sys.version_info >= (3, 11):  # zero-cost exceptions: the try line is a NOP (3.10 sets up a block instead)
        assert any(i.opname == "NOP" for i in dis.get_instructions(_guarded))


def _assigns(flag: bool) -> bool:
    flag = not flag
    return flag


def test_a_flag_the_definition_assigns_to_is_refused() -> None:
    with pytest.raises(ValueError, match="flag is assigned to"):
        specialise(_assigns, flag=True)


def test_an_unknown_flag_is_refused() -> None:
    with pytest.raises(ValueError, match="_fails has no parameter other, unknown"):
        specialise(_fails, unknown=True, other=False)


def test_a_decorated_function_is_refused() -> None:
    @staticmethod  # any decorator: its source is the decorator's input, not what the name holds
    def decorated(flag: bool) -> bool:
        return flag

    with pytest.raises(ValueError, match="only an undecorated function"):
        specialise(decorated.__func__, flag=True)


def test_a_closure_is_refused() -> None:
    outer = "from outside"

    def inner(flag: bool) -> str:
        return outer if flag else ""

    with pytest.raises(ValueError, match="a closure cannot be specialised"):
        specialise(inner, flag=True)


def test_a_copy_that_cannot_be_compiled_leaves_the_definition_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    from ryot_telemetry.router import specialise as module

    def refuse(*args: object, **kwargs: object) -> object:
        raise RecursionError("compiler gave up")

    monkeypatch.setattr(module, "compile", refuse, raising=False)  # the module's name shadows the builtin
    assert specialise(_fails, flag=True) is _fails


def test_without_source_the_definition_itself_serves() -> None:
    namespace: dict[str, object] = {}
    exec("def made(flag):\n    return 'yes' if flag else 'no'\n", namespace)  # no file behind it
    made = namespace["made"]
    assert specialise(made, flag=True) is made  # type: ignore[arg-type]


def test_the_stream_loop_has_one_copy_per_kind_of_stream_each_reading_no_flag() -> None:
    """Usage asked for by the caller (no watch), usage hidden (watch), semconv on (watch and chunk times)."""
    assert set(wrapper._STREAMS) == {(False, False), (True, False), (True, True)}
    for (watch, _), copy in wrapper._STREAMS.items():
        assert copy is not wrapper._traced_stream
        assert {"watch", "note_times"} & _loads(copy) == set()
        names = set(copy.__code__.co_names)
        assert ("_late_usage" in names) is not watch  # reads usage late only when it reads none per chunk
        assert ("_take_usage" in names) is True  # the head reads every chunk's usage in every copy
        assert not any(i.opname == "NOP" for i in dis.get_instructions(copy))  # not even for a ``try`` line
        assert (copy.__code__.co_firstlineno, copy.__code__.co_filename) == (
            wrapper._traced_stream.__code__.co_firstlineno,
            wrapper._traced_stream.__code__.co_filename,
        )


def test_an_async_generator_keeps_its_kind() -> None:
    async def gen(flag: bool) -> AsyncIterator[int]:
        for i in range(3):
            if flag:
                yield i * 10
            else:
                yield i

    async def run(fn: object) -> list[int]:
        return [i async for i in fn(False)]  # type: ignore[operator]

    copy = specialise(gen, flag=True)
    assert inspect.isasyncgenfunction(copy)
    assert asyncio.run(run(copy)) == [0, 10, 20]
    assert asyncio.run(run(gen)) == [0, 1, 2]
