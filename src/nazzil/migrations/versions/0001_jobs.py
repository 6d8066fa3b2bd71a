"""Create the jobs table.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the jobs table and its indexes."""
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("format", sa.String(64), nullable=False),
        sa.Column("audio_format", sa.String(8)),
        sa.Column("clip_start", sa.Float()),
        sa.Column("clip_end", sa.Float()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("title", sa.Text()),
        sa.Column("percent", sa.Float()),
        sa.Column("downloaded_bytes", sa.BigInteger()),
        sa.Column("total_bytes", sa.BigInteger()),
        sa.Column("speed", sa.Float()),
        sa.Column("eta", sa.Float()),
        sa.Column("error_code", sa.String(32)),
        sa.Column("error_message", sa.Text()),
        sa.Column("file_key", sa.Text()),
        sa.Column("file_name", sa.Text()),
        sa.Column("file_size", sa.BigInteger()),
        sa.Column("content_type", sa.String(100)),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease", sa.String(32)),
        sa.Column("worker", sa.String(200)),
        sa.Column("heartbeat_at", sa.DateTime()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime()),
        sa.Column("finished_at", sa.DateTime()),
    )
    op.create_index("ix_jobs_device_created", "jobs", ["device", "created_at"])
    op.create_index("ix_jobs_status_heartbeat", "jobs", ["status", "heartbeat_at"])


def downgrade() -> None:
    """Drop the jobs table."""
    op.drop_index("ix_jobs_status_heartbeat", table_name="jobs")
    op.drop_index("ix_jobs_device_created", table_name="jobs")
    op.drop_table("jobs")
