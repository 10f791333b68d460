"""mailbox_state: whether the batch in hand is processed in one transaction (SQLite)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 02:40:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | Sequence[str] | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Added and dropped in place (SQLite has both since 3.35): see 0009 on batch rebuilds.
    op.add_column('mailbox_state', sa.Column('inflight_together', sa.Boolean(), nullable=False,
                                             server_default=sa.false()))


def downgrade() -> None:
    op.execute("ALTER TABLE mailbox_state DROP COLUMN inflight_together")
