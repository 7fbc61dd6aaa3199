"""The tables and views of a projection schema, created per build (blue/green).

Every projection (support, sales, marketing) lives in its own PostgreSQL schema. A schema holds
the same event-level tables, written by the projector, and the views of its audience over them.
Tables are keyed by event id (facts, written once) or by what they summarize (``customers``,
``conversations``: recomputed for the keys a batch touched, from the facts, in the batch's
transaction). Views that depend on "now" read it from ``clock``: ``now()`` for a live schema,
the ``as_of`` time for a time-travel build.

The shared bookkeeping (``projection_offsets``, ``projection_builds``) lives in the versioned
migrations (projectors/migrations); schemas are created here because a rebuild creates a new one
beside the live one and swaps it in.
"""

from __future__ import annotations

import re

from projectors import aggregates, definitions
from threadline.errors import ConfigError

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ConfigError(f"{name!r} is not a valid schema name (lowercase letters, digits, _)")
    return name


TABLES = (
    """
create schema {s};
create table {s}.meta (
    only_row   boolean primary key default true check (only_row),
    projection text not null,
    build_id   text not null,
    as_of      timestamptz,
    created_at timestamptz not null default now(),
    ddl_version integer not null default {ddl_version}
);
create view {s}.clock as select coalesce(as_of, now()) as now from {s}.meta;

create table {s}.contacts (
    event_id uuid primary key, origin_customer_id text not null, event_type text not null,
    occurred_at timestamptz not null, recorded_at timestamptz not null, connector text not null,
    channel text not null, direction text not null, actor_role text not null, department text,
    subject text, text text, language text, sentiment real, rating smallint, platform text,
    identities jsonb not null, facts jsonb not null, consent jsonb not null, attachments jsonb not null,
    thread jsonb not null, metadata jsonb not null, source_partition integer not null, source_offset bigint not null,
    -- the identity graph's position of the resolution the row holds (header gen): the latest wins
    resolved_gen bigint not null default 0
);
create index on {s}.contacts (origin_customer_id, occurred_at);
create index on {s}.contacts (occurred_at);

create table {s}.conversation_events (
    event_id text primary key, origin_customer_id text not null, conversation_id text not null,
    event_type text not null, occurred_at timestamptz not null, recorded_at timestamptz not null,
    channel text, previous_channel text, contact_event_id text, waiting_on text, sla_kind text,
    sla_target_seconds bigint, sla_started_at timestamptz, sla_due_at timestamptz, sla_elapsed_seconds bigint,
    facts jsonb not null, source_partition integer not null, source_offset bigint not null,
    -- v2: the conversation's version (0: a v1 event) and its state after this event
    version bigint not null default 0, status text, state_opened_at timestamptz, state_messages bigint,
    state_breaches bigint, sla_state text, open_sla_kind text, open_sla_due_at timestamptz,
    merged_into text, merged_into_customer_id text
);
create index on {s}.conversation_events (conversation_id, occurred_at);
create index on {s}.conversation_events (origin_customer_id);
create index on {s}.conversation_events (contact_event_id);

create table {s}.identity_events (
    event_id text primary key, event_type text not null, occurred_at timestamptz not null,
    recorded_at timestamptz not null, customer_id text not null, identities jsonb not null,
    related_customer_ids text[] not null, rule text, reason text, source_event_id text,
    source_partition integer not null, source_offset bigint not null
);

-- Lookup by any identity: which (origin) customer ids an identity was seen with.
create table {s}.customer_identities (
    origin_customer_id text not null, kind text not null, platform text not null, value text not null,
    first_seen_at timestamptz not null, last_seen_at timestamptz not null,
    primary key (kind, platform, value, origin_customer_id)
);
create index on {s}.customer_identities (origin_customer_id);
create index on {s}.customer_identities (kind, lower(value));  -- lookups by any written form (projectors/lookup.py)

-- The customer the identity graph gives each identity now: of the positions (gen) identities.v1
-- v2 events name it at (observed, linked, merged, and the moved_identities of merged and
-- unmerged), the latest. An identity with an owner has its customer_identities row under it.
create table {s}.identity_owners (
    kind text not null, platform text not null, value text not null, customer_id text not null,
    gen bigint not null, primary key (kind, platform, value)
);
create index on {s}.identity_owners (customer_id);

-- Merges as edges absorbed → survivor; root_id is where the chain ends (projectors.rows.roots).
-- gen: the identity graph's position of the edge's latest merge or unmerge (0: an event without
-- one); an unmerge leaves the edge inactive, so an older merge read later does not bring it back.
create table {s}.customer_alias (
    customer_id text not null, survivor_id text not null, root_id text not null,
    event_id text not null, occurred_at timestamptz not null,
    gen bigint not null default 0, active boolean not null default true,
    primary key (customer_id, survivor_id)
);

-- Every customer id ever seen, re-pointed to the customer it stands for today (merges,
-- unmerges): the one row a merge rewrites, so no history row has to move.
create table {s}.customers (
    origin_customer_id text primary key, customer_id text not null, first_seen_at timestamptz not null
);
create index on {s}.customers (customer_id);

-- One row per conversation, recomputed from its events whenever a batch touches it.
create table {s}.conversations (
    conversation_id text primary key, origin_customer_id text not null, opened_at timestamptz not null,
    last_event_at timestamptz not null, state text not null, channel text, first_channel text,
    channels text[] not null, channel_switches integer not null, waiting_on text, last_sla_event text,
    sla_kind text, sla_due_at timestamptz, sla_breaches integer not null, messages integer not null,
    last_contact_event_id text, last_message_at timestamptz,
    version bigint not null default 0, merged_into text, merged_into_customer_id text
);
create index on {s}.conversations (state, last_event_at);
create index on {s}.conversations (origin_customer_id);

-- The contacts each conversation holds now (appended and not removed since, by version), so a
-- contact that moved to another conversation or customer is listed once, where it is.
create table {s}.conversation_messages (
    conversation_id text not null, contact_event_id text not null, occurred_at timestamptz not null,
    channel text, version bigint not null, primary key (conversation_id, contact_event_id)
);
create index conversation_messages_contact on {s}.conversation_messages (contact_event_id);
"""
    + aggregates.TABLES
)

# Views over the tables every projection has; re-created with the audience's views when the
# schema's ``meta.ddl_version`` is older than DDL_VERSION (``views_sql``).
BASE_VIEWS = """
create view {s}.v_contacts as
    select m.customer_id, c.* from {s}.contacts c join {s}.customers m using (origin_customer_id);

create view {s}.conversation_state as
    select m.customer_id, c.*,
           case when c.last_sla_event = 'sla_breached' then 'breached'
                when c.last_sla_event = 'sla_hit' then 'met'
                when c.last_sla_event = 'sla_started' and c.state = 'open'
                     and c.sla_due_at < (select now from {s}.clock) then 'breached'
                when c.last_sla_event = 'sla_started' and c.state = 'open' then 'running'
                else 'none' end as sla_state
    from {s}.conversations c join {s}.customers m using (origin_customer_id);

"""

# After the tables: the definitions every audience counts with, then the customer summary.
SUMMARY = (
    definitions.views_sql()
    + """
create view {s}.customer_summary as  -- customer_stats: kept per batch; sentiment: per customer, at read time
    select a.customer_id, a.first_contact_at, a.last_contact_at, a.contacts, a.language, a.channels,
           st.latest as sentiment_latest, st.avg_30d as sentiment_30d,
           st.recent_7d as sentiment_7d, st.prior_23d as sentiment_prior_23d
    from {s}.customer_stats a
    -- one row at most (grouped by customer); the limit keeps the subquery per customer (not flattened
    -- into a join that would aggregate every customer's sentiment)
    left join lateral (select * from {s}.customer_sentiment x where x.customer_id = a.customer_id limit 1) st on true;
"""
)

# The order of one conversation's events: its version (v2), never the event id or the event time
# alone; v1 events (version 0) keep the order they always had, (occurred_at, event_id).
EVENT_ORDER = "version, occurred_at, event_id"
EVENT_ORDER_DESC = "version desc, occurred_at desc, event_id desc"

# The messages of the conversations a batch touched (%(ids)s): per contact, the highest event of
# message_appended / message_removed decides (v1: opened counts as appended); a conversation
# whose highest event is merged_into holds none (its contacts are appended elsewhere).
RECOMPUTE_MESSAGES = (
    "delete from {s}.conversation_messages where conversation_id = any(%(ids)s)",
    """
insert into {s}.conversation_messages (conversation_id, contact_event_id, occurred_at, channel, version)
select x.conversation_id, x.contact_event_id, x.occurred_at, x.channel, x.version
from (select distinct on (e.conversation_id, e.contact_event_id) e.conversation_id, e.contact_event_id,
             e.event_type, e.occurred_at, e.channel, e.version
      from {s}.conversation_events e
      where e.conversation_id = any(%(ids)s) and e.contact_event_id is not null
        and (e.event_type in ('message_appended', 'message_removed') or (e.event_type = 'opened' and e.version = 0))
      order by e.conversation_id, e.contact_event_id, e.version desc, e.occurred_at desc, e.event_id desc) x
where x.event_type <> 'message_removed'
  and not exists (select 1 from (select distinct on (t.conversation_id) t.conversation_id, t.status
                                 from {s}.conversation_events t where t.conversation_id = x.conversation_id
                                 order by t.conversation_id, t.version desc, t.occurred_at desc, t.event_id desc) top
                  where top.status = 'merged_into')
""",
)

# Recompute the conversations a batch touched (%(ids)s) from their events and messages. A
# conversation with v2 events takes every "latest" column from the state its highest version
# carries (status, waiting_on, the clock that falls due first, messages, breaches) and its channels
# from the messages it holds now; one with v1 events only is computed as before, from the events
# in (occurred_at, event_id) order, counting message_appended and sla_breached events.
RECOMPUTE_CONVERSATIONS = (
    """
insert into {s}.conversations
with ev as (select * from {s}.conversation_events where conversation_id = any(%(ids)s)),
top as (select distinct on (conversation_id) * from ev order by conversation_id, """
    + EVENT_ORDER_DESC
    + """),
msg as (select conversation_id, contact_event_id, occurred_at, channel,
               lag(channel) over (partition by conversation_id order by occurred_at, contact_event_id) as prev
        from {s}.conversation_messages where conversation_id = any(%(ids)s)),
m as (select conversation_id,
             (array_agg(channel order by occurred_at desc, contact_event_id desc) filter (where channel is not null))[1] as channel,
             (array_agg(channel order by occurred_at, contact_event_id) filter (where channel is not null))[1] as first_channel,
             array_agg(distinct channel) filter (where channel is not null) as channels,
             count(*) filter (where prev is not null and channel is not null and prev <> channel) as switches,
             (array_agg(contact_event_id order by occurred_at desc, contact_event_id desc))[1] as last_contact,
             max(occurred_at) as last_message_at, count(*) as messages
      from msg group by conversation_id),
a as (select conversation_id, min(occurred_at) as opened_at, max(occurred_at) as last_event_at,
             case when (array_agg(event_type order by """
    + EVENT_ORDER_DESC
    + """)
                        filter (where event_type in ('opened', 'resolved', 'reopened')))[1] = 'resolved'
                  then 'resolved' else 'open' end as state,
             (array_agg(channel order by """
    + EVENT_ORDER_DESC
    + """) filter (where channel is not null))[1] as channel,
             (array_agg(channel order by """
    + EVENT_ORDER
    + """) filter (where channel is not null))[1] as first_channel,
             coalesce(array_agg(distinct channel) filter (where channel is not null), '{{}}') as channels,
             count(*) filter (where event_type = 'channel_switched') as switches,
             (array_agg(waiting_on order by """
    + EVENT_ORDER_DESC
    + """) filter (where waiting_on is not null))[1] as waiting_on,
             (array_agg(event_type order by """
    + EVENT_ORDER_DESC
    + """)
                  filter (where event_type in ('sla_started', 'sla_hit', 'sla_breached')))[1] as last_sla_event,
             (array_agg(sla_kind order by """
    + EVENT_ORDER_DESC
    + """) filter (where sla_kind is not null))[1] as sla_kind,
             (array_agg(sla_due_at order by """
    + EVENT_ORDER_DESC
    + """) filter (where sla_due_at is not null))[1] as sla_due_at,
             count(*) filter (where event_type = 'sla_breached') as breaches,
             count(*) filter (where event_type = 'message_appended') as messages,
             (array_agg(contact_event_id order by """
    + EVENT_ORDER_DESC
    + """)
                  filter (where event_type = 'message_appended'))[1] as last_contact,
             max(occurred_at) filter (where event_type = 'message_appended') as last_message_at,
             (array_agg(occurred_at order by """
    + EVENT_ORDER_DESC
    + """)
                  filter (where event_type = 'resolved'))[1] as resolved_at
      from ev group by conversation_id),
clock as (select distinct on (conversation_id, sla_kind, sla_started_at) conversation_id, event_type
          from ev where event_type in ('sla_started', 'sla_hit', 'sla_breached', 'sla_withdrawn') and version > 0
          order by conversation_id, sla_kind, sla_started_at, """
    + EVENT_ORDER_DESC
    + """),
met as (select conversation_id, count(*) as clocks from clock where event_type = 'sla_hit' group by conversation_id)
select a.conversation_id, t.origin_customer_id,
       case when v2 then coalesce(t.state_opened_at, a.opened_at) else a.opened_at end,
       case when v2 then coalesce(greatest(m.last_message_at, case when t.status = 'resolved' then a.resolved_at end),
                                  t.occurred_at)
            else a.last_event_at end,
       case when v2 then coalesce(t.status, a.state) else a.state end,
       case when v2 then coalesce(m.channel, a.channel) else a.channel end,
       case when v2 then coalesce(m.first_channel, a.first_channel) else a.first_channel end,
       case when v2 then coalesce(m.channels, a.channels) else a.channels end,
       case when v2 then coalesce(m.switches, 0) else a.switches end,
       case when v2 then coalesce(t.waiting_on, 'nobody') else a.waiting_on end,
       case when not v2 then a.last_sla_event
            when t.state_breaches > 0 then 'sla_breached'
            when t.open_sla_kind is not null and t.status = 'open' then 'sla_started'
            when met.clocks > 0 and t.status <> 'merged_into' then 'sla_hit' end,
       case when v2 then t.open_sla_kind else a.sla_kind end,
       case when v2 then t.open_sla_due_at else a.sla_due_at end,
       case when v2 then coalesce(t.state_breaches, 0) else a.breaches end,
       case when v2 then coalesce(t.state_messages, m.messages, 0) else a.messages end,
       case when v2 then m.last_contact else a.last_contact end,
       case when v2 then m.last_message_at else a.last_message_at end,
       t.version, t.merged_into, t.merged_into_customer_id
from a join (select *, version > 0 as v2 from top) t using (conversation_id)
left join m using (conversation_id) left join met using (conversation_id)
on conflict (conversation_id) do update set
    origin_customer_id = excluded.origin_customer_id, opened_at = excluded.opened_at,
    last_event_at = excluded.last_event_at, state = excluded.state, channel = excluded.channel,
    first_channel = excluded.first_channel, channels = excluded.channels,
    channel_switches = excluded.channel_switches, waiting_on = excluded.waiting_on,
    last_sla_event = excluded.last_sla_event, sla_kind = excluded.sla_kind, sla_due_at = excluded.sla_due_at,
    sla_breaches = excluded.sla_breaches, messages = excluded.messages,
    last_contact_event_id = excluded.last_contact_event_id, last_message_at = excluded.last_message_at,
    version = excluded.version, merged_into = excluded.merged_into,
    merged_into_customer_id = excluded.merged_into_customer_id
"""
)

SUPPORT = """
create view {s}.inbox as  -- inbox_items: kept per batch (projectors/aggregates.py)
    select i.conversation_id, m.customer_id, i.channel, i.channels, i.waiting_on, i.sla_kind, i.sla_due_at,
           case when i.last_sla_event = 'sla_breached' then 'breached'
                when i.last_sla_event = 'sla_hit' then 'met'
                when i.last_sla_event = 'sla_started' and i.sla_due_at < (select now from {s}.clock) then 'breached'
                when i.last_sla_event = 'sla_started' then 'running'
                else 'none' end as sla_state,
           i.opened_at, i.last_event_at, i.messages, i.last_message_at, i.last_message_channel, i.last_message_text
    from {s}.inbox_items i join {s}.customers m using (origin_customer_id);

create view {s}.timeline as
    select c.customer_id, c.event_id, c.occurred_at, c.channel, c.direction, c.actor_role, c.subject, c.text,
           c.language, c.sentiment, c.facts, c.attachments,
           lag(c.channel) over w as previous_channel,
           coalesce(lag(c.channel) over w <> c.channel, false) as channel_switch,
           (select m.conversation_id from {s}.conversation_messages m where m.contact_event_id = c.event_id::text
            order by m.version desc, m.conversation_id limit 1) as conversation_id
    from {s}.v_contacts c
    window w as (partition by c.customer_id order by c.occurred_at, c.event_id);

create view {s}.customer_facts as
    select customer_id, kind, value, min(given_at) as first_given_at, max(given_at) as last_given_at
    from (select c.customer_id, f->>'kind' as kind, f->>'value' as value, c.occurred_at as given_at
          from {s}.v_contacts c cross join lateral jsonb_array_elements(c.facts) f
          union all
          select m.customer_id, f->>'kind', f->>'value', e.occurred_at
          from {s}.conversation_events e join {s}.customers m using (origin_customer_id)
          cross join lateral jsonb_array_elements(e.facts) f) x
    group by customer_id, kind, value;

create view {s}.customer_identity_list as
    select m.customer_id, i.kind, nullif(i.platform, '') as platform, i.value,
           min(i.first_seen_at) as first_seen_at, max(i.last_seen_at) as last_seen_at
    from {s}.customer_identities i join {s}.customers m using (origin_customer_id)
    group by m.customer_id, i.kind, i.platform, i.value;
"""

_7D, _30D = definitions.RECENT_DAYS, definitions.WINDOW_DAYS
SALES = f"""
create view {{s}}.customer_360 as
    with c as (select * from {{s}}.v_contacts),
    purchases as (select customer_id, occurred_at, event_id, facts from c
                  where channel = 'store' or event_type in ('order.placed', 'purchase'))
    select s.customer_id, s.first_contact_at, s.last_contact_at,
        (select count(distinct x.contact_key) from {{s}}.support_contacts x where x.customer_id = s.customer_id
            and {definitions.window_sql("x.occurred_at", _7D)}) as support_contacts_7d,
        (select count(distinct x.contact_key) from {{s}}.support_contacts x where x.customer_id = s.customer_id
            and {definitions.window_sql("x.occurred_at", _30D)}) as support_contacts_30d,
        (select count(*) from {{s}}.conversation_state cs where cs.customer_id = s.customer_id
            and cs.state = 'open') as open_conversations,
        (select count(*) from {{s}}.sla_breaches b where b.customer_id = s.customer_id
            and {definitions.window_sql("b.breached_at", _30D)}) as breached_slas_30d,
        (select count(*) from {{s}}.sla_breaches b where b.customer_id = s.customer_id
            and {definitions.window_sql("b.breached_at", _7D)}) as breached_slas_7d,
        (select max(p.occurred_at) from purchases p where p.customer_id = s.customer_id) as last_purchase_at,
        s.sentiment_7d, s.sentiment_prior_23d, s.sentiment_30d, s.sentiment_latest
    from {{s}}.customer_summary s;
"""

# The latest consent signal per customer, channel and purpose: marketing's consent_latest view, and
# the consent of a customer profile (projectors/profiles.py), which reads it from the support schema.
CONSENT_LATEST = """
    select distinct on (c.customer_id, coalesce(x->>'channel', 'any'), x->>'purpose')
           c.customer_id, coalesce(x->>'channel', 'any') as channel, x->>'purpose' as purpose,
           (x->>'granted')::boolean as granted, x->>'source' as source, c.occurred_at as signal_at,
           c.event_id
    from {s}.v_contacts c cross join lateral jsonb_array_elements(c.consent) x
    order by c.customer_id, coalesce(x->>'channel', 'any'), x->>'purpose', c.occurred_at desc, c.event_id desc"""

MARKETING = (
    """
-- customers whose latest marketing consent signal (event time, then event id: projectors/consent.py)
-- withdrew it: marketing's views leave their contacts out (docs/privacy.md, "Consent ledger"); the flag
-- is kept per batch in customer_stats (projectors/aggregates.py, _WITHDRAWN)
create view {s}.marketing_withdrawn as
    select customer_id from {s}.customer_stats where marketing_withdrawn;

create view {s}.v_marketing_contacts as
    select c.* from {s}.v_contacts c
    where not exists (select 1 from {s}.marketing_withdrawn w where w.customer_id = c.customer_id);

-- engagement_days: kept per batch (projectors/aggregates.py), without the customers who withdrew
-- marketing consent (their engagement members are empty)
create view {s}.engagement_daily as
    select day, channel, contacts, inbound, outbound, customers from {s}.engagement_days;

create view {s}.response_times as
    select channel, count(*) as responses,
           round(avg(sla_elapsed_seconds)::numeric, 1)::float8 as mean_seconds,
           percentile_disc(0.5) within group (order by sla_elapsed_seconds) as p50_seconds,
           percentile_disc(0.9) within group (order by sla_elapsed_seconds) as p90_seconds
    from (select distinct on (e.conversation_id, e.sla_kind, e.sla_started_at) e.channel, e.sla_elapsed_seconds,
                 e.event_type
          from {s}.conversation_events e join {s}.conversations c using (conversation_id)
          where (e.event_type in ('sla_hit', 'sla_breached', 'sla_withdrawn')
                 or (e.event_type = 'sla_started' and e.version > 0))  -- v2: a clock's latest event decides
            and c.state <> 'merged_into'
          order by e.conversation_id, e.sla_kind, e.sla_started_at, e.version desc, e.occurred_at desc, e.event_id desc) x
    where event_type in ('sla_hit', 'sla_breached') and sla_elapsed_seconds is not null and channel is not null
    group by channel;

create view {s}.reviews as
    select customer_id, event_id, occurred_at, platform, rating, sentiment, language, text
    from {s}.v_marketing_contacts where channel = 'review';

create view {s}.consent_latest as
"""
    + CONSENT_LATEST
    + """;

create view {s}.customer_signals as
    with now_ as (select now from {s}.clock)
    select s.customer_id,
        (select r.rating from {s}.v_contacts r where r.customer_id = s.customer_id and r.rating is not null
            order by r.occurred_at desc, r.event_id desc limit 1) as last_rating,
        s.sentiment_30d,
        (select count(*) from {s}.v_contacts x where x.customer_id = s.customer_id and x.direction = 'inbound'
            and x.occurred_at > (select now from now_) - interval '90 days') as inbound_90d,
        (select count(*) from {s}.v_contacts x where x.customer_id = s.customer_id and x.direction = 'inbound'
            and x.channel in ('twitter', 'facebook', 'instagram')
            and x.occurred_at > (select now from now_) - interval '90 days') as social_inbound_90d,
        (select x.channel from {s}.v_contacts x where x.customer_id = s.customer_id
            order by x.occurred_at, x.event_id limit 1) as first_channel
    from {s}.customer_summary s;
"""
)

AUDIENCE = {"support": SUPPORT, "sales": SALES, "marketing": MARKETING}
PROJECTIONS = tuple(AUDIENCE)

# The version of the schema this module creates. A live schema created by an older version has
# its views re-created by the projector (projectors/engine/schema.py, ensure_live); the tables are
# altered by the migrations (projectors/migrations), which leave ddl_version at 1 on the schemas
# they alter.
# 1: the projection schemas as first made (migration 0002).
# 2: conversation events v2 (version, state after each event), conversation_messages.
# 3: conversation events v3 (sla_withdrawn; a clock's latest event decides in sla_breaches and response_times).
# 4: marketing's engagement_daily and reviews leave out customers who withdrew marketing consent.
# 5: aggregates kept per batch (projectors/aggregates.py, migration 0006): sla_breaches, inbox,
#    customer_summary, engagement_daily and marketing_withdrawn (so reviews) read them.
DDL_VERSION = 5

# The tables a rebuild is compared on, with the columns that order them.
TABLE_KEYS = {
    "contacts": "event_id",
    "conversation_events": "event_id",
    "identity_events": "event_id",
    "customer_identities": "kind, platform, value, origin_customer_id",
    "identity_owners": "kind, platform, value",
    "customer_alias": "customer_id, survivor_id",
    "customers": "origin_customer_id",
    "conversations": "conversation_id",
    "conversation_messages": "conversation_id, contact_event_id",
    **aggregates.TABLE_KEYS,
}


def schema_sql(projection: str, schema: str) -> str:
    """The tables and views of a new schema of ``projection``."""
    return TABLES.format(s=check_ident(schema), ddl_version=DDL_VERSION) + views_sql(projection, schema)


def views_sql(projection: str, schema: str) -> str:
    """The views of ``projection`` (created after the tables; re-created by an upgrade)."""
    if projection not in AUDIENCE:
        raise ConfigError(f"unknown projection {projection!r}: one of {', '.join(PROJECTIONS)}")
    return (BASE_VIEWS + SUMMARY + AUDIENCE[projection]).format(s=check_ident(schema))
