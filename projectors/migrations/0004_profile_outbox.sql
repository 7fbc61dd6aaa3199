-- Customers whose profile (customer-profiles.v1, projectors/profiles.py) is to be published: written
-- in the same transaction as the rows and offsets of the batch that touched them, removed once the
-- profiles (or tombstones) are acknowledged by Kafka. A crash in between publishes them again.
create table if not exists profile_outbox (
    projector   text not null,
    customer_id text not null,
    queued_at   timestamptz not null default now(),
    primary key (projector, customer_id)
);
