-- Conversation events v2 carry the conversation's version and its state after each event
-- (issue 13): every projection schema that exists already (live, builds, as-of snapshots) gets the
-- columns that hold them, the table of each conversation's messages, and a DDL version so that the
-- projector re-creates the live schema's views on its next start (projectors/ddl.py DDL_VERSION).
-- Events projected before this migration have version 0 and keep the order of v1 events
-- (occurred_at, event_id); `threadline replay <projection>` rebuilds them with their versions.
do $$
declare
    s text;
begin
    for s in select n.nspname from pg_namespace n
             where exists (select 1 from pg_tables t where t.schemaname = n.nspname and t.tablename = 'meta')
               and exists (select 1 from pg_tables t where t.schemaname = n.nspname and t.tablename = 'conversation_events')
    loop
        execute format('alter table %I.meta add column if not exists ddl_version integer not null default 1', s);
        execute format('alter table %I.conversation_events'
                       ' add column if not exists version bigint not null default 0,'
                       ' add column if not exists status text, add column if not exists state_opened_at timestamptz,'
                       ' add column if not exists state_messages bigint, add column if not exists state_breaches bigint,'
                       ' add column if not exists sla_state text, add column if not exists open_sla_kind text,'
                       ' add column if not exists open_sla_due_at timestamptz,'
                       ' add column if not exists merged_into text, add column if not exists merged_into_customer_id text', s);
        execute format('alter table %I.conversations'
                       ' add column if not exists version bigint not null default 0,'
                       ' add column if not exists merged_into text, add column if not exists merged_into_customer_id text', s);
        execute format('create table if not exists %I.conversation_messages ('
                       ' conversation_id text not null, contact_event_id text not null,'
                       ' occurred_at timestamptz not null, channel text, version bigint not null,'
                       ' primary key (conversation_id, contact_event_id))', s);
        execute format('create index if not exists conversation_messages_contact on %I.conversation_messages'
                       ' (contact_event_id)', s);
        execute format('insert into %I.conversation_messages'
                       ' select distinct on (conversation_id, contact_event_id) conversation_id, contact_event_id,'
                       ' occurred_at, channel, version from %I.conversation_events'
                       ' where event_type = ''message_appended'' and contact_event_id is not null'
                       ' order by conversation_id, contact_event_id, version desc, occurred_at desc, event_id desc'
                       ' on conflict do nothing', s, s);
    end loop;
end $$;
