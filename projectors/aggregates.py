"""Aggregates kept up to date by the projector, in the transaction of the rows they derive from.

The reads that run most (the inbox page, breach counts on the card and in the sales context,
engagement per day) used to be views aggregating every row of a schema per request. They now read
tables that each batch maintains for what it touched:

* ``sla_clocks``: one row per SLA clock (conversation, kind, started at) with what its events say
  (due time, reported breach, stopped, withdrawn); recomputed for the conversations of the batch.
  ``sla_breaches`` (projectors/definitions.py) applies the clock ("now") at read time, so a clock
  that runs past its due time is a breach without any event.
* ``inbox_items``: the open conversations with their last message's channel and text; recomputed
  for the conversations of the batch, and refreshed when the last message's contact arrives after
  the conversation event that names it (contacts and conversations come from different topics).
* ``customer_stats``: per customer, first and last contact, contacts, language, channels (the part
  of the card that does not depend on the clock; the sentiment windows are read per customer), and
  whether the customer's latest marketing consent signal withdrew it (``marketing_withdrawn``:
  marketing's ``marketing_withdrawn`` view and ``reviews`` read it, docs/privacy.md);
* ``engagement_members`` (day, channel, customer: counts) and ``engagement_days`` (day, channel:
  totals and distinct customers): the stats and members of the customers a batch touched (its
  contacts' customers, the customers a merge or unmerge re-pointed, before and after, the customers
  a re-resolved contact left) are recomputed, and the day totals move by the difference — no day
  is re-read. A customer who withdrew marketing consent has no members, so engagement leaves them
  out; consent arrives on contacts, so the batch that brings a signal recomputes its customer.

Every table has its from-scratch query (``FROM_SCRATCH``): ``refresh`` rebuilds a schema's tables
from its rows (the upgrade of a schema made before them, the read benchmark's loading, the end of a
rebuild's first pass: ``read_models.Store.finish``), each table from the ones it already made where
FROM_SCRATCH would compute them again, and the tests
compare the incremental tables with them on the real stack (tests/integration/projectors/compare.py).
"""

from __future__ import annotations

from collections.abc import Iterable

# The tables, created with every projection schema (``ddl.TABLES``) and by migration 0006 in the
# schemas made before them.
TABLES = """
create table {s}.sla_clocks (
    conversation_id text not null, sla_kind text not null, sla_started_at timestamptz, due_at timestamptz,
    reported_breach boolean not null, stopped boolean not null, withdrawn boolean not null
);
create index on {s}.sla_clocks (conversation_id);

create table {s}.inbox_items (
    conversation_id text primary key, origin_customer_id text not null, channel text, channels text[] not null,
    waiting_on text, sla_kind text, sla_due_at timestamptz, last_sla_event text, opened_at timestamptz not null,
    last_event_at timestamptz not null, messages integer not null, last_message_at timestamptz,
    last_contact_event_id text, last_message_channel text, last_message_text text
);
create index on {s}.inbox_items ((coalesce(sla_due_at, 'infinity'::timestamptz)), last_event_at, conversation_id);
create index on {s}.inbox_items (last_contact_event_id);

create table {s}.engagement_members (
    customer_id text not null, day date not null, channel text not null,
    contacts bigint not null, inbound bigint not null, outbound bigint not null,
    primary key (customer_id, day, channel)
);
create table {s}.customer_stats (
    customer_id text primary key, first_contact_at timestamptz not null, last_contact_at timestamptz not null,
    contacts bigint not null, language text, channels text[] not null,
    marketing_withdrawn boolean not null default false
);
create table {s}.engagement_days (
    day date not null, channel text not null, contacts bigint not null, inbound bigint not null,
    outbound bigint not null, customers bigint not null, primary key (day, channel)
);
"""

# Ordered as compared (the tables' keys; sla_clocks has no primary key: a started_at may be null).
TABLE_KEYS = {
    "sla_clocks": "conversation_id, sla_kind, sla_started_at",
    "inbox_items": "conversation_id",
    "engagement_members": "customer_id, day, channel",
    "engagement_days": "day, channel",
    "customer_stats": "customer_id",
}

_LATEST = "array_agg(event_type order by version desc, occurred_at desc, event_id desc))[1]"

# {where}: "" (every row) or a restriction to what a batch touched.
_CLOCKS = f"""
select conversation_id, sla_kind, sla_started_at, max(sla_due_at) as due_at,
       -- v2 (version > 0): the clock's latest event by version decides (a late reply turns a breach
       -- into a hit); v1: any breach event
       case when max(version) > 0 then ({_LATEST} = 'sla_breached'
            else bool_or(event_type = 'sla_breached') end as reported_breach,
       -- v2: stopped while its latest event is a hit or a breach (a late contact can take a stop
       -- back, sla_started again); withdrawn: a late contact took the clock back
       case when max(version) > 0 then ({_LATEST} in ('sla_hit', 'sla_breached')
            else bool_or(event_type in ('sla_hit', 'sla_breached')) end as stopped,
       ({_LATEST} = 'sla_withdrawn' as withdrawn
from {{s}}.conversation_events
where sla_kind is not null and event_type in ('sla_started', 'sla_hit', 'sla_breached', 'sla_withdrawn') {{where}}
group by conversation_id, sla_kind, sla_started_at"""

_UUID = "'^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$'"

# The last message's contact is found by its primary key (a contact event id is a UUID in its
# canonical text form; anything else matches no contact, as the text comparison always did).
_INBOX = f"""
select c.conversation_id, c.origin_customer_id, c.channel, c.channels, c.waiting_on, c.sla_kind, c.sla_due_at,
       c.last_sla_event, c.opened_at, c.last_event_at, c.messages, c.last_message_at, c.last_contact_event_id,
       lc.channel, lc.text
from {{s}}.conversations c
left join {{s}}.contacts lc
       on lc.event_id = (case when c.last_contact_event_id ~ {_UUID} then c.last_contact_event_id::uuid end)
      and lc.event_id::text = c.last_contact_event_id
where c.state = 'open' {{where}}"""

# The customers whose latest marketing consent signal (event time, then event id, as
# projectors/consent.py orders them) withdrew it. {customers}: "" or a restriction on c.customer_id.
_WITHDRAWN = """
select customer_id from (
    select distinct on (c.customer_id) c.customer_id, (x->>'granted')::boolean as granted
    from {s}.v_contacts c cross join lateral jsonb_array_elements(c.consent) x
    where x->>'purpose' = 'marketing' and x ? 'granted' {customers}
    order by c.customer_id, c.occurred_at desc, c.event_id desc, coalesce(x->>'channel', 'any') desc,
             (x->>'granted')::boolean desc) latest
where not granted"""

# {withdrawn}: the customers left out (from scratch: ``_WITHDRAWN``; per batch: the flags of
# customer_stats, just recomputed for the same customers).
_MEMBERS = """
select m.customer_id, (c.occurred_at at time zone 'UTC')::date, c.channel, count(*),
       count(*) filter (where c.direction = 'inbound'), count(*) filter (where c.direction = 'outbound')
from {s}.contacts c join {s}.customers m using (origin_customer_id)
where not exists (select 1 from ({withdrawn}) w where w.customer_id = m.customer_id) {where}
group by 1, 2, 3"""

_STATS = """
select st.*, w.customer_id is not null
from (select customer_id, min(occurred_at), max(occurred_at), count(*),
             (array_agg(language order by occurred_at desc, event_id desc) filter (where language is not null))[1],
             array_agg(distinct channel)
      from {s}.v_contacts {where} group by customer_id) st(customer_id, first_at, last_at, contacts, language, channels)
left join ({withdrawn}) w using (customer_id)"""

_ALL_MEMBERS = _MEMBERS.replace("{withdrawn}", _WITHDRAWN.replace("{customers}", "")).replace("{where}", "")

FROM_SCRATCH = {
    "sla_clocks": _CLOCKS.replace("{where}", ""),
    "inbox_items": _INBOX.replace("{where}", ""),
    "engagement_members": _ALL_MEMBERS,
    "engagement_days": """
select day, channel, sum(contacts)::bigint, sum(inbound)::bigint, sum(outbound)::bigint, count(*)
from ({members}) x(customer_id, day, channel, contacts, inbound, outbound) group by day, channel""".replace(
        "{members}", _ALL_MEMBERS
    ),
    "customer_stats": _STATS.replace("{withdrawn}", _WITHDRAWN.replace("{customers}", "")).replace("{where}", ""),
}


# ``refresh``: the customers' stats first, then the members from their consent flags (as a batch
# does), then the day totals from the members: each query reads what the one before wrote instead
# of computing it again (FROM_SCRATCH's engagement_days computes every member, and both compute
# every customer's consent). The same rows: the tables equal their FROM_SCRATCH (compare.py).
_REFRESH = {
    "sla_clocks": FROM_SCRATCH["sla_clocks"],
    "inbox_items": FROM_SCRATCH["inbox_items"],
    "customer_stats": FROM_SCRATCH["customer_stats"],
    "engagement_members": _MEMBERS.replace(
        "{withdrawn}", "select customer_id from {s}.customer_stats where marketing_withdrawn"
    ).replace("{where}", ""),
    "engagement_days": "select day, channel, sum(contacts)::bigint, sum(inbound)::bigint, sum(outbound)::bigint,"
    " count(*) from {s}.engagement_members group by day, channel",
}


def refresh(cur, s: str) -> None:
    """Rebuild every aggregate table of schema ``s`` (a checked identifier) from its rows."""
    for table, query in _REFRESH.items():
        cur.execute(f"truncate {s}.{table}")
        cur.execute(f"insert into {s}.{table} " + query.format(s=s))


def conversations_changed(cur, s: str, ids: list[str]) -> None:
    """After the conversations ``ids`` were recomputed: their clocks and inbox rows."""
    params = {"ids": ids}
    where = "and conversation_id = any(%(ids)s)"
    cur.execute(f"delete from {s}.sla_clocks where conversation_id = any(%(ids)s)", params)
    cur.execute(f"insert into {s}.sla_clocks " + _CLOCKS.format(s=s, where=where), params)
    cur.execute(f"delete from {s}.inbox_items where conversation_id = any(%(ids)s)", params)
    cur.execute(
        f"insert into {s}.inbox_items " + _INBOX.format(s=s, where="and c.conversation_id = any(%(ids)s)"), params
    )


def contacts_arrived(cur, s: str, event_ids: list[str]) -> None:
    """Contacts ``event_ids`` were written: an inbox row whose last message is one of them takes
    its channel and text (its conversation event may have come first)."""
    cur.execute(
        f"update {s}.inbox_items i set last_message_channel = c.channel, last_message_text = c.text"
        f" from {s}.contacts c where i.last_contact_event_id = any(%(ids)s)"
        f" and c.event_id = any(%(ids)s::uuid[]) and c.event_id::text = i.last_contact_event_id"
        f" and (i.last_message_channel, i.last_message_text) is distinct from (c.channel, c.text)",
        {"ids": [e for e in map(str, event_ids) if _is_uuid(e)]},
    )


def _is_uuid(value: str) -> bool:
    import re

    return re.fullmatch(_UUID.strip("'").replace("{{", "{").replace("}}", "}"), value) is not None


def customers_changed(cur, s: str, customer_ids: Iterable[str]) -> None:
    """The contacts of ``customer_ids`` changed (new ones, or re-pointed by a merge or an unmerge:
    pass the ids before and after): recompute their stats (marketing consent included) and
    engagement members, and move the day totals by the difference."""
    ids = sorted(set(customer_ids))
    if not ids:
        return
    cur.execute(f"delete from {s}.customer_stats where customer_id = any(%(ids)s)", {"ids": ids})
    cur.execute(
        f"insert into {s}.customer_stats "
        + _STATS.format(
            s=s,
            where="where customer_id = any(%(ids)s)",
            withdrawn=_WITHDRAWN.format(s=s, customers="and c.customer_id = any(%(ids)s)"),
        ),
        {"ids": ids},
    )
    cur.execute(
        "create temp table if not exists _engagement_delta (day date, channel text, contacts bigint,"
        " inbound bigint, outbound bigint, customers bigint) on commit delete rows"
    )
    cur.execute("delete from _engagement_delta")
    cur.execute(
        f"with old as (delete from {s}.engagement_members where customer_id = any(%(ids)s) returning *)"
        " insert into _engagement_delta select day, channel, -contacts, -inbound, -outbound, -1 from old",
        {"ids": ids},
    )
    cur.execute(
        f"with new as (insert into {s}.engagement_members "
        + _MEMBERS.format(
            s=s,
            where="and m.customer_id = any(%(ids)s)",
            withdrawn=f"select customer_id from {s}.customer_stats where marketing_withdrawn and customer_id = any(%(ids)s)",
        )
        + " returning *) insert into _engagement_delta select day, channel, contacts, inbound, outbound, 1 from new",
        {"ids": ids},
    )
    cur.execute(
        f"insert into {s}.engagement_days as d select day, channel, sum(contacts), sum(inbound), sum(outbound),"
        " sum(customers) from _engagement_delta group by day, channel"
        " having sum(contacts) <> 0 or sum(inbound) <> 0 or sum(outbound) <> 0 or sum(customers) <> 0"
        " on conflict (day, channel) do update set contacts = d.contacts + excluded.contacts,"
        " inbound = d.inbound + excluded.inbound, outbound = d.outbound + excluded.outbound,"
        " customers = d.customers + excluded.customers"
    )
    cur.execute(
        f"delete from {s}.engagement_days d using (select distinct day, channel from _engagement_delta) x"
        " where d.day = x.day and d.channel = x.channel and d.customers = 0"
    )
