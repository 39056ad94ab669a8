"""Alembic's environment for the app database, run by qscope.appdb.migrate (never by an alembic.ini): the
migrations run on the connection it hands over in `config.attributes["connection"]`, inside its transaction.
`target_metadata` is given only when drafting a revision with autogenerate (docs/app-db.md); batch mode lets a
draft alter a SQLite table (SQLite's ALTER TABLE cannot change or drop most things)."""

from alembic import context

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=context.config.attributes.get("target_metadata"),
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
