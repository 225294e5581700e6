"""The web side of robust-guidance: REST API, API keys, survey pages, statistics.

Kept import-light on purpose: importing ``app`` must not import FastAPI,
SQLAlchemy models or torch, so that pure parts (``app.stats``, ``app.keys``)
can be used from scripts and workers. The ASGI application is built by
``app.main.create_app``.
"""
