"""Alembic environment: one metadata for the whole project (``worker.db.Base``).

Modules that define tables are imported here so that ``alembic revision
--autogenerate`` sees them; add yours to ``MODEL_MODULES``. Migrations
themselves are written out explicitly and never import model classes, so an
old migration keeps meaning what it meant when it was written.
"""
from __future__ import annotations

import importlib
import logging.config

from alembic import context
from sqlalchemy import engine_from_config, pool

from worker.db import Base

MODEL_MODULES = ["worker.models", "app.keys", "worker.survey_models", "worker.analysis_models", "worker.evaluation_models",
                 "worker.classification_models", "worker.robustness_models"]
for _name in MODEL_MODULES:
    importlib.import_module(_name)

config = context.config
if config.config_file_name and config.attributes.get("configure_logger", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

if not config.get_main_option("sqlalchemy.url"):
    from worker.config import Settings

    config.set_main_option("sqlalchemy.url", Settings.from_env().database_url.replace("%", "%%"))

target_metadata = Base.metadata


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connectable = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                     poolclass=pool.NullPool)
    with connectable.connect() as connection:
        # render_as_batch: SQLite cannot ALTER constraints in place; batch mode
        # rebuilds the table, so later migrations work on both backends.
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          compare_type=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
