-- identities.v1 v2: merged and unmerged events name the identities that moved (moved_identities),
-- and every event carries the identity graph's position (gen). Each projection schema keeps, per
-- identity, the customer of its latest position (identity_owners); an identity with an owner has
-- its customer_identities row under that customer (projectors/read_models.py). Every projection
-- schema that exists already (live, builds, as-of snapshots) gets the table, empty: events from
-- before v2 name no position, so their rows stay where they are; `threadline replay <projection>`
-- rebuilds a projection from the log. customer_alias keeps the position of an edge's latest merge
-- or unmerge (gen) and whether it stands (active): an unmerge leaves the edge inactive instead of
-- deleting it, so a merge of an earlier position read after it does not bring it back.
do $$
declare
    s text;
begin
    for s in select n.nspname from pg_namespace n
             where exists (select 1 from pg_tables t where t.schemaname = n.nspname and t.tablename = 'meta')
               and exists (select 1 from pg_tables t where t.schemaname = n.nspname and t.tablename = 'customer_identities')
    loop
        execute format('create table if not exists %I.identity_owners ('
                       ' kind text not null, platform text not null, value text not null, customer_id text not null,'
                       ' gen bigint not null, primary key (kind, platform, value))', s);
        execute format('create index if not exists identity_owners_customer_id_idx on %I.identity_owners (customer_id)', s);
        execute format('alter table %I.customer_alias add column if not exists gen bigint not null default 0,'
                       ' add column if not exists active boolean not null default true', s);
    end loop;
end $$;
