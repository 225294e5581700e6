"""Generation quality: FID and precision/recall over a feature network (``metrics``) and the
method-by-scale quality table of ``rguide evaluate`` (``quality``)."""
