-- Aggregates kept per batch (projectors/aggregates.py): every projection schema that exists already
-- (live, builds, as-of snapshots) gets the tables, empty. The projector fills those of the live
-- schema on its next start, when it re-creates the views of a schema older than DDL version 5
-- (projectors/engine/schema.py upgrade_views); `threadline replay <projection>` rebuilds any other.
do $$
declare
    s text;
begin
    for s in select n.nspname from pg_namespace n
             where exists (select 1 from pg_tables t where t.schemaname = n.nspname and t.tablename = 'meta')
               and exists (select 1 from pg_tables t where t.schemaname = n.nspname and t.tablename = 'conversation_events')
    loop
        execute format('create table if not exists %I.sla_clocks ('
                       ' conversation_id text not null, sla_kind text not null, sla_started_at timestamptz,'
                       ' due_at timestamptz, reported_breach boolean not null, stopped boolean not null,'
                       ' withdrawn boolean not null)', s);
        execute format('create index if not exists sla_clocks_conversation_id_idx on %I.sla_clocks (conversation_id)', s);
        execute format('create table if not exists %I.inbox_items ('
                       ' conversation_id text primary key, origin_customer_id text not null, channel text,'
                       ' channels text[] not null, waiting_on text, sla_kind text, sla_due_at timestamptz,'
                       ' last_sla_event text, opened_at timestamptz not null, last_event_at timestamptz not null,'
                       ' messages integer not null, last_message_at timestamptz, last_contact_event_id text,'
                       ' last_message_channel text, last_message_text text)', s);
        execute format('create index if not exists inbox_items_coalesce_last_event_at_conversati_idx on %I.inbox_items'
                       ' ((coalesce(sla_due_at, ''infinity''::timestamptz)), last_event_at, conversation_id)', s);
        execute format('create index if not exists inbox_items_last_contact_event_id_idx on %I.inbox_items'
                       ' (last_contact_event_id)', s);
        execute format('create table if not exists %I.engagement_members ('
                       ' customer_id text not null, day date not null, channel text not null,'
                       ' contacts bigint not null, inbound bigint not null, outbound bigint not null,'
                       ' primary key (customer_id, day, channel))', s);
        execute format('create table if not exists %I.customer_stats ('
                       ' customer_id text primary key, first_contact_at timestamptz not null,'
                       ' last_contact_at timestamptz not null, contacts bigint not null, language text,'
                       ' channels text[] not null, marketing_withdrawn boolean not null default false)', s);
        execute format('create table if not exists %I.engagement_days ('
                       ' day date not null, channel text not null, contacts bigint not null, inbound bigint not null,'
                       ' outbound bigint not null, customers bigint not null, primary key (day, channel))', s);
    end loop;
end $$;
