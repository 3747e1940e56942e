"""subscribers.topic_mask and topic_bits: each subscriber's topics as one integer, so a
launch reads one table instead of a lookup per topic (store/topic_masks.py keeps it), and the
indexes the launch's plan reads alone. Existing subscribers get their masks here; every
topic followed gets a bit, in name order.

Revision ID: 0014_launch
Revises: 0013_web
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_launch"
down_revision = "0013_web"
branch_labels = None
depends_on = None

MAX_BITS = 63


def upgrade() -> None:
    op.create_table(
        "topic_bits",
        sa.Column("topic", sa.String(64), primary_key=True),
        sa.Column("bit", sa.Integer, nullable=False, unique=True),
    )
    op.add_column("subscribers", sa.Column("topic_mask", sa.BigInteger, nullable=False,
                                           server_default="0"))
    conn = op.get_bind()
    topics = conn.execute(sa.text("SELECT DISTINCT topic FROM subscriber_topics ORDER BY topic")
                          ).scalars().all()
    if len(topics) > MAX_BITS:
        raise RuntimeError(f"{len(topics)} topics are followed; topic masks hold {MAX_BITS}: "
                           "remove the topics nobody should follow any more, then upgrade")
    if topics:
        conn.execute(sa.text("INSERT INTO topic_bits (topic, bit) VALUES (:topic, :bit)"),
                     [{"topic": t, "bit": b} for b, t in enumerate(topics)])
        conn.execute(sa.text(
            "UPDATE subscribers SET topic_mask = COALESCE((SELECT SUM(CAST(1 AS BIGINT) << "
            "b.bit) FROM subscriber_topics t JOIN topic_bits b ON b.topic = t.topic "
            "WHERE t.subscriber_id = subscribers.id), 0)"))
    op.create_index("ix_subscribers_status_topic_mask", "subscribers", ["status", "topic_mask"])
    # The suppression lookup by hash, widened so that finding the active suppressed and
    # their masks reads the index alone.
    op.drop_index("ix_subscribers_email_hash", table_name="subscribers")
    op.create_index("ix_subscribers_email_hash_status", "subscribers",
                    ["email_hash", "status", "topic_mask"])


def downgrade() -> None:
    op.drop_index("ix_subscribers_email_hash_status", table_name="subscribers")
    op.create_index("ix_subscribers_email_hash", "subscribers", ["email_hash"])
    op.drop_index("ix_subscribers_status_topic_mask", table_name="subscribers")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("topic_mask")
    op.drop_table("topic_bits")
