"""Per-process memory of the "last used" stamps already written this second.

Every answered request stamps its client key (and the provider credential it used)
as last used, at one-second resolution, in Redis hashes that a periodic job
persists. Rewriting the same second's stamp is a no-op for Redis but costs the
gateway two or three pipeline commands a request (packing, parsing: about 5% of its
CPU at full load). `SecondStamps.fresh` says whether a stamp still has to be
written; skipping it never loses information, and it never lets this process
overwrite a later second written by another process with an older one either.
"""

from __future__ import annotations


class SecondStamps:
    def __init__(self) -> None:
        self._written: dict[tuple[str, int], int] = {}

    def fresh(self, kind: str, ident: int, second: int) -> bool:
        """True (and remembered) unless ``kind``/``ident`` was already stamped ``second``."""
        key = (kind, ident)
        if self._written.get(key) == second:
            return False
        if len(self._written) > 100_000:  # bounded: keys and credentials come and go
            self._written.clear()
        self._written[key] = second
        return True

    def clear(self) -> None:
        self._written.clear()
