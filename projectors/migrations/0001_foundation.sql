-- Tracking rows: the next offset each projector reads, per topic partition. Written in the same
-- transaction as the rows it projects, so a projector resumes exactly where its writes stopped.
create table if not exists projection_offsets (
    projector   text    not null,
    topic       text    not null,
    partition   integer not null,
    next_offset bigint  not null,
    updated_at  timestamptz not null default now(),
    primary key (projector, topic, partition)
);

create schema if not exists skeleton;

-- The walking skeleton's read model: one row per resolved contact.
create table if not exists skeleton.contacts (
    event_id     uuid primary key,
    customer_id  text not null,
    connector    text not null,
    channel      text not null,
    direction    text not null,
    occurred_at  timestamptz not null,
    recorded_at  timestamptz not null,
    text         text,
    record       jsonb not null,
    source_topic text not null,
    source_partition integer not null,
    source_offset bigint not null
);
create index if not exists contacts_by_customer on skeleton.contacts (customer_id, occurred_at);
