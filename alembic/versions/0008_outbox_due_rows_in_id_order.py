"""outbox: index pending rows in id order (with the due time), replacing the index led by the
due time, so reading the next due rows no longer sorts every pending row

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 19:45:00

"""
from collections.abc import Sequence

from alembic import op

revision: str = '0008'
down_revision: str | Sequence[str] | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_status_next_attempt_at'))
        batch_op.create_index(batch_op.f('ix_outbox_status_id_next_attempt_at'),
                              ['status', 'id', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_status_id_next_attempt_at'))
        batch_op.create_index(batch_op.f('ix_outbox_status_next_attempt_at'),
                              ['status', 'next_attempt_at'], unique=False)
