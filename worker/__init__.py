"""Celery workers and the SQL job store of the generation service.

``worker.config`` (settings), ``worker.db`` (engine, sessions, migrations),
``worker.models`` and ``worker.jobs`` (the job store) import neither torch nor
Celery; ``worker.celery_app``/``worker.tasks`` hold the Celery side and
``worker.runner`` the only code that runs models for the service.
"""
