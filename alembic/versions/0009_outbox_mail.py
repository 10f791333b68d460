"""outbox: each row's mail bytes move to outbox_mail, written once, so that marking a row sent
(or claiming it) no longer makes SQLite rewrite the whole message

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 02:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | Sequence[str] | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# ALTER TABLE ... DROP COLUMN, which SQLite has had since 3.35, rather than Alembic's batch
# mode: that rebuilds the table, and dropping the old one with foreign keys on fails once
# case events refer to its rows (every database in use).


def upgrade() -> None:
    op.create_table(
        'outbox_mail',
        sa.Column('outbox_id', sa.Integer(), nullable=False),
        sa.Column('raw', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['outbox_id'], ['outbox.id'],
                                name=op.f('fk_outbox_mail_outbox_id_outbox')),
        sa.PrimaryKeyConstraint('outbox_id', name=op.f('pk_outbox_mail')),
    )
    op.execute("INSERT INTO outbox_mail (outbox_id, raw) SELECT id, raw FROM outbox")
    op.execute("ALTER TABLE outbox DROP COLUMN raw")


def downgrade() -> None:
    op.add_column('outbox', sa.Column('raw', sa.LargeBinary(), nullable=True))
    op.execute("UPDATE outbox SET raw = (SELECT raw FROM outbox_mail "
               "WHERE outbox_mail.outbox_id = outbox.id)")
    if op.get_bind().dialect.name != "sqlite":
        # SQLite makes a column NOT NULL only by rebuilding the table (see above): it stays
        # nullable there, and every row has its bytes.
        op.alter_column('outbox', 'raw', nullable=False)
    op.drop_table('outbox_mail')
