"""Adversarial robustness: attacks on noisy inputs (``attacks``) and classifier evaluation under them (``evaluate``)."""
