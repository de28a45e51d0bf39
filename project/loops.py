"""One object per running event loop: asyncio pools and connections belong to the loop
that opened them, so each loop (the server's, the sync API's portal, a test's) gets its own.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable


class PerLoop[T]:
    """``make()``'s object for the running loop, made on first use.

    Keyed by the loop itself, weakly: a finished loop takes its entry with it, and a
    new loop can never be handed a dead one's object because it reused an id().
    """

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._objects: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        found = self._objects.get(loop)
        if found is None:
            found = self._objects[loop] = self._make()
        return found

    def pop(self) -> T | None:
        """The running loop's object, forgotten (its owner closes it)."""
        return self._objects.pop(asyncio.get_running_loop(), None)

    def values(self) -> list[T]:
        return list(self._objects.values())
