"""least privilege: the rollup refresh as a SECURITY DEFINER function

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 22:05:00.000000

Only the owner of a materialised view may refresh it, and the web app and the workers connect
as a role that owns nothing (gridmgmt.kernel.roles grants it what it needs after every
upgrade). The scheduler's refresh goes through this function instead: it runs with its
owner's rights, on a fixed search_path, and does nothing else. EXECUTE is taken from PUBLIC;
the app role gets it from gridmgmt.kernel.roles.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "public.refresh_evaluation_rollup(boolean)"

FUNCTION = """
CREATE OR REPLACE FUNCTION public.refresh_evaluation_rollup(concurrent boolean)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF concurrent THEN
        REFRESH MATERIALIZED VIEW CONCURRENTLY public.evaluation_days;
    ELSE
        REFRESH MATERIALIZED VIEW public.evaluation_days;
    END IF;
END
$$
"""

# When a superuser runs the migrations, the function still runs as the view's owner, not as
# the superuser (a no-op when the owner runs them).
OWNED_LIKE_THE_VIEW = f"""
DO $$
DECLARE view_owner name;
BEGIN
    SELECT pg_get_userbyid(relowner) INTO view_owner
    FROM pg_class WHERE oid = 'public.evaluation_days'::regclass;
    EXECUTE format('ALTER FUNCTION {SIGNATURE} OWNER TO %I', view_owner);
END
$$
"""


def upgrade() -> None:
    op.execute(FUNCTION)
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(OWNED_LIKE_THE_VIEW)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
