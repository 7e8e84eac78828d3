"""Waiting in tests: one bounded poll loop for a condition to come true (``until``), one for a while over which a
condition must hold or samples are taken (``during``). Tests use these, never a loop of their own around sleep."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any


def until(
    check: Callable[[], Any],
    within: float,
    what: str | None = None,
    *,
    interval: float = 0.05,
    tolerate: tuple[type[BaseException], ...] = (),
) -> Any:
    """Call ``check()`` every ``interval`` seconds until it returns something truthy, and return that.

    ``tolerate``: exceptions that count as "not yet" (a server still starting refuses connections). After
    ``within`` seconds: an AssertionError naming ``what`` and the last answer; or, where ``what`` is None, the last
    answer itself (None after a tolerated exception), for the caller to assert on with its own message.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            last = check()
        except tolerate as e:
            last, failed = e, True
        else:
            failed = False
            if last:
                return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    if what is None:
        return None if failed else last
    raise AssertionError(f"timed out after {within}s waiting for {what} (last: {last!r})")


def during(seconds: float, interval: float = 0.1) -> Iterator[int]:
    """Yield 0, 1, 2, ... every ``interval`` seconds for ``seconds`` (at least once): the body checks what must
    hold all that while, or takes a sample."""
    end = time.monotonic() + seconds
    i = 0
    while True:
        yield i
        if time.monotonic() >= end:
            return
        i += 1
        time.sleep(interval)
