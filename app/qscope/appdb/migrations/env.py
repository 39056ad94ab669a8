"""Alembic's environment for the app database, run by qscope.appdb.migrate (never by an alembic.ini): the
migrations run on the connection it hands over in `config.attributes["connection"]`, inside its transaction."""

from alembic import context

context.configure(connection=context.config.attributes["connection"], target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
