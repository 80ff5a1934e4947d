"""territory, taxonomy, units, users, cases

Revision ID: 0001
Revises:
Create Date: 2026-11-23 12:49:10.913097
"""

from collections.abc import Sequence

import geoalchemy2
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.schema.CreateSequence(sa.Sequence("case_number_seq")))
    # Case numbers read as the UTC day + a sequence of at least 6 digits (never truncated).
    op.execute("""
        CREATE FUNCTION next_case_number() RETURNS text LANGUAGE plpgsql VOLATILE AS $$
        DECLARE n bigint := nextval('case_number_seq');
        BEGIN
            RETURN to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')
                || lpad(n::text, greatest(6, length(n::text)), '0');
        END $$
    """)
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=8), nullable=False),
        sa.Column("trusted", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
    )
    op.create_table(
        "areas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=12), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column(
            "geom",
            geoalchemy2.types.Geometry(
                geometry_type="MULTIPOLYGON",
                srid=4326,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("area_m2", sa.Float(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "level IN ('district', 'street', 'community')", name=op.f("ck_areas_level")
        ),
        sa.ForeignKeyConstraint(["parent_id"], ["areas.id"], name=op.f("fk_areas_parent_id_areas")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_areas")),
        sa.UniqueConstraint("code", name=op.f("uq_areas_code")),
    )
    op.create_index("ix_areas_geom", "areas", ["geom"], unique=False, postgresql_using="gist")
    op.create_index(op.f("ix_areas_parent_id"), "areas", ["parent_id"], unique=False)
    op.create_table(
        "business_calendars",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("work_periods", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("weekend", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_business_calendars")),
        sa.UniqueConstraint("code", name=op.f("uq_business_calendars_code")),
    )
    op.create_table(
        "major_classes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=2), nullable=False),
        sa.Column("name_zh", sa.Text(), nullable=False),
        sa.Column("name_en", sa.Text(), nullable=False),
        sa.CheckConstraint("code ~ '^[0-9]{2}$'", name=op.f("ck_major_classes_code_digits")),
        sa.CheckConstraint("kind IN ('component', 'event')", name=op.f("ck_major_classes_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_major_classes")),
        sa.UniqueConstraint("kind", "code", name="uq_major_classes_kind_code"),
    )
    op.create_table(
        "calendar_days",
        sa.Column("calendar_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("is_workday", sa.Boolean(), nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["calendar_id"],
            ["business_calendars.id"],
            name=op.f("fk_calendar_days_calendar_id_business_calendars"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("calendar_id", "day", name=op.f("pk_calendar_days")),
    )
    op.create_table(
        "categories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=8), nullable=False),
        sa.Column("major_id", sa.Integer(), nullable=False),
        sa.Column("minor_code", sa.String(length=2), nullable=False),
        sa.Column("name_zh", sa.Text(), nullable=False),
        sa.Column("name_en", sa.Text(), nullable=False),
        sa.Column("description_zh", sa.Text(), server_default="", nullable=False),
        sa.Column("description_en", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "keywords", postgresql.JSONB(astext_type=sa.Text()), server_default="[]", nullable=False
        ),
        sa.Column("limit_value", sa.Numeric(precision=8, scale=2), nullable=False),
        sa.Column("limit_unit", sa.String(length=8), nullable=False),
        sa.Column("urgent_limit_value", sa.Numeric(precision=8, scale=2), nullable=True),
        sa.Column("urgent_limit_unit", sa.String(length=8), nullable=True),
        sa.Column("filing_condition_zh", sa.Text(), server_default="", nullable=False),
        sa.Column("filing_condition_en", sa.Text(), server_default="", nullable=False),
        sa.Column("closing_condition_zh", sa.Text(), server_default="", nullable=False),
        sa.Column("closing_condition_en", sa.Text(), server_default="", nullable=False),
        sa.Column("unit_type", sa.String(length=16), nullable=False),
        sa.Column("duplicate_radius_m", sa.Integer(), server_default="50", nullable=False),
        sa.Column("duplicate_window_hours", sa.Integer(), server_default="72", nullable=False),
        sa.Column(
            "attributes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
        ),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.CheckConstraint(
            "limit_unit IN ('hours', 'days')", name=op.f("ck_categories_limit_unit")
        ),
        sa.CheckConstraint("minor_code ~ '^[0-9]{2}$'", name=op.f("ck_categories_minor_digits")),
        sa.CheckConstraint(
            "urgent_limit_unit IS NULL OR urgent_limit_unit IN ('hours', 'days')",
            name=op.f("ck_categories_urgent_limit_unit"),
        ),
        sa.CheckConstraint("limit_value > 0", name=op.f("ck_categories_limit_positive")),
        sa.ForeignKeyConstraint(
            ["major_id"], ["major_classes.id"], name=op.f("fk_categories_major_id_major_classes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_categories")),
        sa.UniqueConstraint("code", name=op.f("uq_categories_code")),
        sa.UniqueConstraint("major_id", "minor_code", name="uq_categories_major_minor"),
    )
    op.create_table(
        "grid_cells",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=15), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=False),
        sa.Column(
            "geom",
            geoalchemy2.types.Geometry(
                geometry_type="POLYGON",
                srid=4326,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("area_m2", sa.Float(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("code ~ '^[0-9]{14}([0-9])?$'", name=op.f("ck_grid_cells_code_digits")),
        sa.ForeignKeyConstraint(
            ["community_id"], ["areas.id"], name=op.f("fk_grid_cells_community_id_areas")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grid_cells")),
        sa.UniqueConstraint("code", name=op.f("uq_grid_cells_code")),
    )
    op.create_index(
        op.f("ix_grid_cells_community_id"), "grid_cells", ["community_id"], unique=False
    )
    op.create_index(
        "ix_grid_cells_geom", "grid_cells", ["geom"], unique=False, postgresql_using="gist"
    )
    op.create_table(
        "units",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("unit_type", sa.String(length=16), nullable=False),
        sa.Column("community_id", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(kind = 'community') = (community_id IS NOT NULL)",
            name=op.f("ck_units_community_owns_area"),
        ),
        sa.CheckConstraint("kind IN ('community', 'department')", name=op.f("ck_units_kind")),
        sa.CheckConstraint(
            "unit_type IN ('community', 'sanitation', 'water', 'drainage', 'gas', 'power', 'telecom', 'roads', 'traffic', 'lighting', 'greenery', 'housing', 'enforcement', 'emergency')",
            name=op.f("ck_units_unit_type"),
        ),
        sa.ForeignKeyConstraint(
            ["community_id"], ["areas.id"], name=op.f("fk_units_community_id_areas")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_units")),
        sa.UniqueConstraint("code", name=op.f("uq_units_code")),
        sa.UniqueConstraint("community_id", name=op.f("uq_units_community_id")),
    )
    op.create_table(
        "routing_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("category_id", sa.Integer(), nullable=False),
        sa.Column("area_id", sa.Integer(), nullable=True),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="100", nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["area_id"], ["areas.id"], name=op.f("fk_routing_rules_area_id_areas")
        ),
        sa.ForeignKeyConstraint(
            ["category_id"], ["categories.id"], name=op.f("fk_routing_rules_category_id_categories")
        ),
        sa.ForeignKeyConstraint(
            ["unit_id"], ["units.id"], name=op.f("fk_routing_rules_unit_id_units")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_rules")),
    )
    op.create_index(
        op.f("ix_routing_rules_category_id"), "routing_rules", ["category_id"], unique=False
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(role = 'unit_staff') = (unit_id IS NOT NULL)", name=op.f("ck_users_unit_staff_unit")
        ),
        sa.CheckConstraint(
            "role IN ('citizen', 'inspector', 'operator', 'dispatcher', 'unit_staff', 'leader', 'admin')",
            name=op.f("ck_users_role"),
        ),
        sa.ForeignKeyConstraint(["unit_id"], ["units.id"], name=op.f("fk_users_unit_id_units")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_index(op.f("ix_users_unit_id"), "users", ["unit_id"], unique=False)
    op.create_table(
        "cases",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column(
            "number",
            sa.String(length=24),
            server_default=sa.text("next_case_number()"),
            nullable=False,
        ),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("category_id", sa.Integer(), nullable=False),
        sa.Column("urgent", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column(
            "location",
            geoalchemy2.types.Geometry(
                geometry_type="POINT",
                srid=4326,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("cell_id", sa.Integer(), nullable=True),
        sa.Column("community_id", sa.Integer(), nullable=True),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("routing_rule_id", sa.Integer(), nullable=True),
        sa.Column("reporter_id", sa.Integer(), nullable=True),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column(
            "contact", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("merged_into_id", sa.BigInteger(), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rework_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("dispatch_state", sa.String(length=16), server_default="none", nullable=False),
        sa.Column("dispatch_error", sa.Text(), nullable=True),
        sa.Column(
            "reported_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("filed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.CheckConstraint(
            "dispatch_state IN ('none', 'queued', 'done', 'manual', 'failed')",
            name=op.f("ck_cases_dispatch_state"),
        ),
        sa.CheckConstraint(
            "source IN ('inspector', 'citizen', 'open311', 'hotline', 'operator')",
            name=op.f("ck_cases_source"),
        ),
        sa.CheckConstraint(
            "status IN ('reported', 'verified', 'invalid', 'filed', 'rejected', 'merged', 'dispatched', 'in_progress', 'returned', 'suspended', 'handled', 'closed')",
            name=op.f("ck_cases_status"),
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_cases_api_key_id_api_keys")
        ),
        sa.ForeignKeyConstraint(
            ["category_id"], ["categories.id"], name=op.f("fk_cases_category_id_categories")
        ),
        sa.ForeignKeyConstraint(
            ["cell_id"], ["grid_cells.id"], name=op.f("fk_cases_cell_id_grid_cells")
        ),
        sa.ForeignKeyConstraint(
            ["community_id"], ["areas.id"], name=op.f("fk_cases_community_id_areas")
        ),
        sa.ForeignKeyConstraint(
            ["merged_into_id"], ["cases.id"], name=op.f("fk_cases_merged_into_id_cases")
        ),
        sa.ForeignKeyConstraint(
            ["reporter_id"], ["users.id"], name=op.f("fk_cases_reporter_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["routing_rule_id"],
            ["routing_rules.id"],
            name=op.f("fk_cases_routing_rule_id_routing_rules"),
        ),
        sa.ForeignKeyConstraint(["unit_id"], ["units.id"], name=op.f("fk_cases_unit_id_units")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_cases_idempotency_key")),
        sa.UniqueConstraint("number", name=op.f("uq_cases_number")),
    )
    op.create_index(
        "ix_cases_location", "cases", ["location"], unique=False, postgresql_using="gist"
    )
    op.create_index("ix_cases_reported_at", "cases", ["reported_at"], unique=False)
    op.create_index("ix_cases_status", "cases", ["status"], unique=False)
    op.create_index(
        "ix_cases_unit_status_deadline", "cases", ["unit_id", "status", "deadline"], unique=False
    )
    op.create_table(
        "case_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("case_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_role", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "data", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_case_events_actor_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_case_events_case_id_cases")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_events")),
    )
    op.create_index(op.f("ix_case_events_case_id"), "case_events", ["case_id"], unique=False)
    # The event log is append-only: history is never rewritten, only added to.
    op.execute("""
        CREATE FUNCTION case_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'case_events is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
    """)
    op.execute("""
        CREATE TRIGGER case_events_append_only BEFORE UPDATE OR DELETE ON case_events
        FOR EACH ROW EXECUTE FUNCTION case_events_append_only()
    """)
    op.execute("""
        CREATE TRIGGER case_events_no_truncate BEFORE TRUNCATE ON case_events
        FOR EACH STATEMENT EXECUTE FUNCTION case_events_append_only()
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS case_events_no_truncate ON case_events")
    op.execute("DROP TRIGGER IF EXISTS case_events_append_only ON case_events")
    op.execute("DROP FUNCTION IF EXISTS case_events_append_only()")
    op.drop_index(op.f("ix_case_events_case_id"), table_name="case_events")
    op.drop_table("case_events")
    op.drop_index("ix_cases_unit_status_deadline", table_name="cases")
    op.drop_index("ix_cases_status", table_name="cases")
    op.drop_index("ix_cases_reported_at", table_name="cases")
    op.drop_index("ix_cases_location", table_name="cases", postgresql_using="gist")
    op.drop_table("cases")
    op.drop_index(op.f("ix_users_unit_id"), table_name="users")
    op.drop_table("users")
    op.drop_index(op.f("ix_routing_rules_category_id"), table_name="routing_rules")
    op.drop_table("routing_rules")
    op.drop_table("units")
    op.drop_index("ix_grid_cells_geom", table_name="grid_cells", postgresql_using="gist")
    op.drop_index(op.f("ix_grid_cells_community_id"), table_name="grid_cells")
    op.drop_table("grid_cells")
    op.drop_table("categories")
    op.drop_table("calendar_days")
    op.drop_table("major_classes")
    op.drop_table("business_calendars")
    op.drop_index(op.f("ix_areas_parent_id"), table_name="areas")
    op.drop_index("ix_areas_geom", table_name="areas", postgresql_using="gist")
    op.drop_table("areas")
    op.drop_table("api_keys")
    op.execute(sa.schema.DropSequence(sa.Sequence("case_number_seq")))
    op.execute("DROP FUNCTION IF EXISTS next_case_number()")
