"""Whole runs built on the per-image chain (:mod:`mammoprep.pipeline`) and the batch runner
(:mod:`mammoprep.batch`): harmonising a folder into derived files (:mod:`.harmonize`) and the
before/after preview (:mod:`.preview`). The stage packages below them (``io``,
``segmentation``, ``harmonise``) never import them."""
