"""The one registry helper: a name -> entry table with one way to add, look up and list.

Label adapters (``--labels KIND:PATH``), pixel-data decoders and ``mammotrain``'s tasks are
each a :class:`Registry`. Adding an entry under a name already taken is a programming error
(``ValueError``); looking up an unknown name raises the registry's own error type with the
known names in the message, so a user who mistypes ``--labels lumnia:DIR`` or
``--task densty`` is told what exists.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, in the order they were registered.

    what: what an entry is, for messages (``"label source"``, ``"decoder"``, ``"task"``).
    unknown: ``(name, known_names) -> Exception`` raised by :meth:`get` for a name that is
    not registered (default: ``KeyError`` naming the known ones).
    """

    def __init__(self, what: str,
                 unknown: Callable[[str, list[str]], Exception] | None = None) -> None:
        self.what = what
        self._unknown = unknown
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` (which must be new); returns the entry."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry of ``name``; the registry's error naming the known names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            known = self.names()
            if self._unknown is not None:
                raise self._unknown(name, known) from None
            raise KeyError(f"unknown {self.what} {name!r}; known: {', '.join(known)}") from None

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def values(self) -> list[T]:
        return list(self._entries.values())

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)
