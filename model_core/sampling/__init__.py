"""Sampling: the trajectory loop (``loop``), the sampler registry (``registry``) and guidance (``guidance``).

This ``__init__`` imports nothing, so that ``model_core.sampling.registry``
stays importable without torch (the API lists samplers from it).
"""
