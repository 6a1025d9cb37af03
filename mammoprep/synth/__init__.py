"""Deterministic synthetic multi-vendor cohort (``mammoprep synth``)."""
