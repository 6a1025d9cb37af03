"""Harmonisation: the low-energy :class:`~.match.Reference`, CDF matching (:mod:`.match`),
building and loading a reference (:mod:`.reference`), energy classes (:mod:`.energy`) and
the before/after preview (:mod:`.preview`)."""
