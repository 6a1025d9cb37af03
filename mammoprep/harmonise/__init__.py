"""Harmonisation: the low-energy :class:`~.match.Reference`, CDF matching (:mod:`.match`),
building and loading a reference (:mod:`.reference`) and energy classes (:mod:`.energy`).
Harmonising a folder into files and the preview are runs above the pipeline
(:mod:`mammoprep.runs`)."""
