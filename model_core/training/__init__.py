"""Training: the resumable loop (``loop``), time-dependent classifiers (``classifier``), diffusion
models (``diffusion``), the digit feature network (``feature_net``) and recipes from presets (``recipes``)."""
