-- A contact re-keyed by a merge or an unmerge is written again to contacts.resolved.v1 under its
-- new customer, with the identity graph's position in the header `gen`. The contact tables keep,
-- of a contact's resolutions, the latest by that position (projectors/rows.py supersedes), so a
-- contact that moved away is no longer listed under the customer it was first resolved to. Rows
-- projected before this migration have position 0: any later resolution replaces them;
-- `threadline replay <projection>` rebuilds a projection with the positions of every record.
alter table skeleton.contacts add column if not exists resolved_gen bigint not null default 0;
do $$
declare
    s text;
begin
    -- the contacts table of every projection schema (the ones with a meta table): live, builds, as-of
    for s in select c.schemaname from pg_tables c join pg_tables m on m.schemaname = c.schemaname
             where c.tablename = 'contacts' and m.tablename = 'meta'
    loop
        execute format('alter table %I.contacts add column if not exists resolved_gen bigint not null default 0', s);
    end loop;
end $$;
