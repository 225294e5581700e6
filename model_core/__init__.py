"""Pure-PyTorch core of robust classifier guidance.

No web, database or Celery imports anywhere in this package. ``presets`` and
``steps`` are also free of torch so that the API can validate requests
without loading it.
"""

__version__ = "0.1.0"
