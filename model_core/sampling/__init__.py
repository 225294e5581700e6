"""Sampling: the trajectory loop (``loop``), the sampler registry (``registry``) and the samplers
(``base`` for their interface, ``ddpm``, ``ddim``), guidance providers (``providers`` for the
interface and the list of classifier kinds, ``adm_classifier``) and the guidance formulas (``guidance``).

This ``__init__`` imports nothing, so that ``model_core.sampling.registry`` and
``model_core.sampling.providers`` stay importable without torch (the API lists
samplers from the one, presets check classifier kinds against the other).
"""
