-- Projections (support, sales, marketing): each lives in its own schema, created by the
-- projector or a replay (projectors/ddl.py). What is shared is here.

-- When the last record a projector read was written to Kafka (for lag in seconds).
alter table projection_offsets add column if not exists last_record_at timestamptz;

-- Every build of a projection: the live one, rebuilds swapped in, as-of snapshots.
create table if not exists projection_builds (
    build_id    text primary key,
    projection  text not null,
    schema_name text not null,
    as_of       timestamptz,
    started_at  timestamptz not null default now(),
    finished_at timestamptz,
    swapped_at  timestamptz,
    events      bigint
);
