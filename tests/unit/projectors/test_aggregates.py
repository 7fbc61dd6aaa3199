"""The kept aggregates (projectors/aggregates.py): each table is created with every schema, added to
the schemas made before it by the migration, compared by replays, and has its from-scratch query."""

from __future__ import annotations

from projectors import aggregates, ddl
from projectors.migrate import migrations


def test_every_kept_table_is_created_migrated_compared_and_computable_from_scratch():
    [migration] = [sql for version, sql in migrations() if version == "0006_aggregates"]
    schema = ddl.schema_sql("support", "x")
    for table in aggregates.TABLE_KEYS:
        assert f"create table x.{table} (" in schema
        assert f"%I.{table} (" in migration
        assert table in ddl.TABLE_KEYS
        assert "{s}" in aggregates.FROM_SCRATCH[table]


def test_the_read_views_read_the_kept_tables_not_the_rows():
    support, marketing = ddl.views_sql("support", "x"), ddl.views_sql("marketing", "x")
    assert "from x.inbox_items i" in support
    assert "from x.sla_clocks k" in support
    assert "from x.customer_stats a" in support
    assert "from x.engagement_days" in marketing
    # marketing consent: the flag kept per customer, not every contact's signals per read
    assert "from x.customer_stats where marketing_withdrawn" in marketing
    assert "where x->>'purpose' = 'marketing'" in aggregates.FROM_SCRATCH["customer_stats"]
    assert "where x->>'purpose' = 'marketing'" in aggregates.FROM_SCRATCH["engagement_members"]


def test_only_canonical_uuids_are_looked_up_as_contacts():
    assert aggregates._is_uuid("0f8fad5b-d9cb-469f-a165-70867728950e")
    assert not aggregates._is_uuid("0F8FAD5B-D9CB-469F-A165-70867728950E")
    assert not aggregates._is_uuid("not-a-uuid")
