"""Alembic environment: runs migrations against the URL the worker passes in."""

from __future__ import annotations

from alembic import context

from worker.adapters.db import make_engine
from worker.adapters.db_models import Base

config = context.config
target_metadata = Base.metadata


def database_url() -> str | None:
    # `complaints-worker db upgrade` sets sqlalchemy.url; the alembic CLI passes -x url=...
    return context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url")


def run_migrations_online() -> None:
    url = database_url()
    assert url, "sqlalchemy.url must be set (complaints-worker db upgrade sets it from the config)"
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=database_url(), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
