"""streams/identity.py: the identity graph, its linking rules, guardrails, merges and unmerges."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.contact import to_record
from streams.identity import ContactRecord, IdentityGraph, NodeRecord, customer_id_for, evidence, identity_key, resolve
from streams.rules import IdentityRules, rules_from_settings
from threadline.settings import Settings

from ..conftest import RECORDED_AT


def rules_from_env(env: dict[str, str]):
    """The rules a worker started with these variables would run (threadline.settings reads them)."""
    return rules_from_settings(Settings(**{k.removeprefix("THREADLINE_").lower(): v for k, v in env.items()}).streams)


T0 = 1_795_000_000_000
MIN = 60_000


def contact(eid, *identities, t=0, facts=(), **extra):
    idents = []
    for i, ident in enumerate(identities):
        kind, _, rest = ident.partition(":")
        platform, value = rest.split(":", 1) if kind == "social" else (None, rest)
        strength = "asserted"
        if value.endswith("~hint"):
            value, strength = value[:-5], "hint"
        idents.append({"kind": kind, "value": value, "platform": platform, "strength": strength, "primary": i == 0})
    return {
        "event_id": eid,
        "occurred_at": T0 + t * MIN,
        "recorded_at": T0 + t * MIN + 500,
        "identities": idents,
        "facts": [{"kind": k, "value": v, "source": "text"} for k, v in facts],
        **extra,
    }


def feed(contacts, rules=None):
    g = IdentityGraph({}, rules)
    changes = [g.observe(c) for c in contacts]
    return g, changes


def events(changes, kind):
    return [e for ch in changes for e in ch.events if e["event_type"] == kind]


GIULIA_ORDER = contact(
    "order", "email:giulia.rossi@example.it", "phone:+393471234567", t=-3000, facts=[("order_number", "100234")]
)
GIULIA_TWEET = contact("tweet", "social:twitter:giulia_r", t=0)
GIULIA_DM = contact("dm", "social:twitter:giulia_r", t=6, facts=[("order_number", "100234")])
GIULIA_MAIL = contact("mail", "email:giulia.rossi@example.it", t=15)
GIULIA_CALL = contact("call", "phone:+393471234567", t=120)


def test_identities_carried_by_one_contact_belong_to_one_customer():
    g, _ = feed(
        [
            contact("chat", "chat_visitor:v-1", "email:tom@example.co.uk"),
            contact("mail", "email:tom@example.co.uk", t=5),
        ]
    )
    assert g.customer_of("chat") == g.customer_of("mail") == customer_id_for("chat")
    assert g.node_customer("chat_visitor:v-1") == g.node_customer("email:tom@example.co.uk")


def test_an_order_number_given_on_another_channel_links_to_the_customer_who_placed_the_order():
    g, changes = feed([GIULIA_ORDER, GIULIA_TWEET, GIULIA_DM, GIULIA_MAIL, GIULIA_CALL])
    customers = {g.customer_of(e) for e in ("order", "tweet", "dm", "mail", "call")}
    assert customers == {customer_id_for("order")}
    merged = events(changes, "merged")
    assert [(m["customer_id"], m["related_customer_ids"], m["rule"]) for m in merged] == [
        (customer_id_for("order"), [customer_id_for("tweet")], "shared_fact")
    ]
    # The tweet was resolved before the DM revealed who she is: it is re-keyed to the survivor.
    assert changes[2].rekeyed == [("tweet", customer_id_for("order"), customer_id_for("tweet"))]


def test_a_fact_kind_that_is_not_a_linking_rule_links_nothing():
    g, _ = feed(
        [
            contact("a", "email:a@example.com", facts=[("preference", "window seat")]),
            contact("b", "email:b@example.com", facts=[("preference", "window seat")]),
        ]
    )
    assert g.customer_of("a") != g.customer_of("b")


def test_a_phone_in_a_signature_is_only_a_hint_and_does_not_link_by_default():
    hinted = [
        contact("call", "phone:+393471234567"),
        contact("mail", "email:giulia.rossi@example.it", "phone:+393471234567~hint", t=5),
    ]
    g, _ = feed(hinted)
    assert g.customer_of("call") != g.customer_of("mail")
    g, changes = feed(hinted, IdentityRules(hint_links=True))
    assert g.customer_of("call") == g.customer_of("mail")
    assert events(changes, "linked")[0]["rule"] == "hint"


def test_the_earliest_contact_names_the_customer_and_survives_a_merge():
    late_first = [
        contact("b", "email:x@example.com", t=10),
        contact("a", "phone:+31612345678", t=1),
        contact("c", "email:x@example.com", "phone:+31612345678", t=20),
    ]
    g, changes = feed(late_first)
    assert g.customer_of("b") == customer_id_for("a")
    merged = events(changes, "merged")
    assert merged[0]["customer_id"] == customer_id_for("a")
    assert merged[0]["related_customer_ids"] == [customer_id_for("b")]


# --- order independence --------------------------------------------------------------------

IDENTS = [
    "email:a@example.com",
    "email:b@example.com",
    "email:c@example.com",
    "phone:+31611111111",
    "phone:+31622222222",
    "phone:+31633333333",
    "social:twitter:aa",
    "social:twitter:bb",
    "chat_visitor:v-1",
    "email:noreply@example.com",
    "phone:+31622222222~hint",
]

contact_strategy = st.builds(
    lambda n, idents, t, facts: (idents, t, facts),
    st.integers(),
    st.lists(st.sampled_from(IDENTS), min_size=1, max_size=3, unique=True),
    st.integers(min_value=0, max_value=50),
    st.lists(
        st.tuples(st.sampled_from(["order_number", "account_number"]), st.sampled_from(["1", "2", "3"])), max_size=1
    ),
)


# A world of contacts and operator unlinks: the contacts, a random source, whether hints link, the
# unlinks (pairs of identities); ``world_steps`` turns one into ("c", contact) and ("u", (a, b)) steps.
graph_worlds = (
    st.lists(contact_strategy, min_size=1, max_size=12),
    st.randoms(use_true_random=False),
    st.booleans(),
    st.lists(st.tuples(st.sampled_from(IDENTS[:9]), st.sampled_from(IDENTS[:9])), max_size=2),
)


def world_rules(hints: bool) -> IdentityRules:
    return IdentityRules(hint_links=hints, limits={"email": 2, "phone": 2})


def world_steps(specs, unlinks) -> list[tuple[str, object]]:
    contacts = [("c", contact(f"e{i}", *idents, t=t, facts=facts)) for i, (idents, t, facts) in enumerate(specs)]
    return contacts + [
        ("u", (identity_key(contact("x", a)["identities"][0]), identity_key(contact("x", b)["identities"][0])))
        for a, b in unlinks
        if a != b
    ]


@settings(max_examples=150, deadline=None)
@given(*graph_worlds)
def test_the_same_contacts_in_any_arrival_order_give_the_same_customers(specs, rnd, hints, unlinks):
    rules = world_rules(hints)
    in_order = world_steps(specs, unlinks)
    contacts = [item for kind, item in in_order if kind == "c"]

    def run(steps):
        g = IdentityGraph({}, rules)
        for kind, item in steps:
            g.observe(item) if kind == "c" else g.unlink(*item, command_id=f"{item}", at_ms=T0)
        return {c["event_id"]: g.customer_of(c["event_id"]) for c in contacts}

    shuffled = list(in_order)
    rnd.shuffle(shuffled)  # contacts and unlink commands interleaved in any order
    assert run(shuffled) == run(in_order)


@given(st.permutations([GIULIA_ORDER, GIULIA_TWEET, GIULIA_DM, GIULIA_MAIL, GIULIA_CALL]))
def test_giulia_is_one_customer_with_the_same_id_whatever_the_arrival_order(order):
    g, _ = feed(copy.deepcopy(order))
    assert {g.customer_of(c["event_id"]) for c in order} == {customer_id_for("order")}


# --- guardrails ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "placeholder",
    [
        "email:noreply@shop.example",
        "email:unknown",
        "phone:0000000000",
        "phone:+0000000000",
        "email:test@test.com",
        "social:twitter:unknown",
    ],
)
def test_a_blocked_placeholder_value_links_no_one_and_the_refusal_is_an_event(placeholder):
    g, changes = feed(
        [contact("a", "email:anna@example.com", placeholder), contact("b", "email:bart@example.com", placeholder, t=1)]
    )
    assert g.customer_of("a") != g.customer_of("b")
    rejected = events(changes, "link_rejected")
    assert [(r["reason"], r["source_event_id"]) for r in rejected] == [("blocked_value", "a"), ("blocked_value", "b")]
    assert rejected[0]["customer_id"] == g.customer_of("a")


def _sealed(contacts, blocked=None):
    """The contacts as a sealing writer produces them with privacy on: pseudonyms only."""
    import os

    from schemas.identities import DEFAULT_BLOCKED
    from schemas.privacy import MasterKeyWrapper, MemoryKeyRing, Pseudonymizer, seal_contact

    ring = MemoryKeyRing(Pseudonymizer(b"p" * 32, blocked or DEFAULT_BLOCKED), MasterKeyWrapper(os.urandom(32)))
    return [seal_contact(c, ring) for c in contacts]


@pytest.mark.parametrize(
    "placeholder",
    [
        "email:noreply@shop.example",
        "email:unknown",
        "phone:+3333333333",
        "email:test@test.com",
        "social:twitter:unknown",
    ],
)
def test_with_privacy_on_a_blocked_value_seen_as_a_pseudonym_still_links_no_one(placeholder):
    sealed = _sealed(
        [
            contact("a", "email:anna@example.com", placeholder, facts=[("order_number", "N/A")]),
            contact("b", "email:bart@example.com", placeholder, t=1, facts=[("order_number", "n/a ")]),
        ]
    )
    assert sealed[0]["identities"][1]["value"] == sealed[1]["identities"][1]["value"]  # one pseudonym, as before
    assert "example" not in json.dumps(sealed[0]["identities"])
    g, changes = feed(sealed)
    assert g.customer_of("a") != g.customer_of("b")
    assert [r["reason"] for r in events(changes, "link_rejected")] == ["blocked_value", "blocked_value"]


def test_with_privacy_on_configured_blocked_values_get_blocked_pseudonyms_too():
    rules = rules_from_env({"THREADLINE_IDENTITY_BLOCKED": "Shared@Family.example"}).identity
    a, b = _sealed(
        [
            contact("a", "email:anna@example.com", "email:shared@family.example"),
            contact("b", "email:bart@example.com", "email:shared@family.example", t=1),
        ],
        rules.blocked_values,
    )
    g, _ = feed([a, b], rules)
    assert g.customer_of("a") != g.customer_of("b")
    # a real shared address still links, through its ordinary pseudonym
    c, d = _sealed([contact("c", "email:cleo@example.com"), contact("d", "email:cleo@example.com", t=1)])
    g, _ = feed([c, d])
    assert g.customer_of("c") == g.customer_of("d")


def test_configured_blocked_values_are_added_to_the_defaults():
    rules = rules_from_env({"THREADLINE_IDENTITY_BLOCKED": "Shared@Family.example"}).identity
    g, _ = feed(
        [
            contact("a", "email:anna@example.com", "email:shared@family.example"),
            contact("b", "email:bart@example.com", "email:shared@family.example", t=1),
        ],
        rules,
    )
    assert g.customer_of("a") != g.customer_of("b")
    assert "unknown" in rules.blocked_values


def test_a_contact_whose_every_identity_is_blocked_still_gets_a_customer_of_its_own():
    g, changes = feed([contact("a", "email:noreply@shop.example"), contact("b", "email:noreply@shop.example")])
    assert g.customer_of("a") and g.customer_of("b") and g.customer_of("a") != g.customer_of("b")


def test_a_shared_family_phone_does_not_merge_ten_people():
    family = [contact(f"p{i}", f"email:person{i}@example.com", "phone:+393470000001", t=i) for i in range(10)]
    g, changes = feed(family, IdentityRules(limits={"email": 2}))
    customers = {g.customer_of(c["event_id"]) for c in family}
    assert len(customers) == 9  # the first two (by event time) share the phone; no one else joins them
    rejected = events(changes, "link_rejected")
    assert len(rejected) == 8 and {r["reason"] for r in rejected} == {"limit:email"}


def test_when_a_limit_is_hit_the_kind_lower_in_priority_is_the_link_dropped():
    # Customer X already has two phones; a contact brings X's email and a third phone.
    x = [
        contact("x1", "email:x@example.com", "phone:+31611111111", t=0),
        contact("x2", "email:x@example.com", "phone:+31622222222", t=1),
    ]
    third = contact("x3", "phone:+31633333333", "email:x@example.com", t=2)
    g, changes = feed([*x, third], IdentityRules(limits={"phone": 2}))
    # The email (higher priority) links the contact to X; the third phone is what is dropped.
    assert g.customer_of("x3") == g.customer_of("x1")
    assert g.node_customer("phone:+31633333333") != g.customer_of("x1")
    assert [r["reason"] for r in events(changes, "link_rejected")] == ["limit:phone"]


def test_limits_priority_and_windows_are_read_from_the_environment():
    rules = rules_from_env(
        {
            "THREADLINE_IDENTITY_LIMITS": "phone=1",
            "THREADLINE_IDENTITY_PRIORITY": "phone,email",
            "THREADLINE_IDENTITY_HINT_LINKS": "1",
            "THREADLINE_IDENTITY_LINK_FACTS": "iban",
        }
    )
    assert rules.identity.limits["phone"] == 1 and rules.identity.limits["email"] == 2
    assert rules.identity.priority == ("phone", "email") and rules.identity.hint_links
    assert rules.identity.link_fact_kinds == frozenset({"iban"})


# --- merges, unmerges, duplicates ----------------------------------------------------------


def test_an_unlink_splits_the_customer_and_keeps_the_two_apart_for_good():
    g, _ = feed(
        [
            contact("a", "email:a@example.com", t=0),
            contact("b", "phone:+31611111111", t=1),
            contact("ab", "email:a@example.com", "phone:+31611111111", t=2),
        ]
    )
    assert g.customer_of("a") == g.customer_of("b")
    change = g.unlink("email:a@example.com", "phone:+31611111111", command_id="op-1", at_ms=T0)
    assert g.customer_of("a") != g.customer_of("b")
    [unmerged] = [e for e in change.events if e["event_type"] == "unmerged"]
    assert unmerged["customer_id"] == customer_id_for("a")
    assert unmerged["related_customer_ids"] == [customer_id_for("b")]
    assert unmerged["reason"] == "unlinked_by_operator"
    assert ("b", customer_id_for("b"), customer_id_for("a")) in change.rekeyed
    # New evidence tying them again is refused, with its reason.
    again = g.observe(contact("ab2", "email:a@example.com", "phone:+31611111111", t=3))
    assert g.customer_of("a") != g.customer_of("b")
    assert [e["reason"] for e in again.events if e["event_type"] == "link_rejected"] == ["unlinked_by_operator"]


def test_a_duplicate_contact_changes_nothing_and_gets_the_same_answer():
    g, (first,) = feed([contact("a", "email:a@example.com", "email:noreply@x.example")])
    before = copy.deepcopy(g.store)
    again = g.observe(contact("a", "email:a@example.com", "email:noreply@x.example"))
    assert again.duplicate and g.store == before
    assert again.customer_id == first.customer_id and again.events == first.events and again.rekeyed == []


# --- the stored state ------------------------------------------------------------------------

# A graph state written by the form with one-letter keys (t, a, n, cust, out; c, cust, x), recorded
# from that code: Giulia's order (email, phone, order number), her DM giving the order number,
# a contact whose only identity is blocked, and an operator's unlink of her Twitter handle from
# the order number.
OLD_FORM = Path(__file__).resolve().parents[2] / "fixtures" / "identity_graph_state_v1.json"


def _the_old_form_story(g: IdentityGraph) -> None:
    g.observe(GIULIA_ORDER)
    g.observe(contact("dm", "social:twitter:giulia_r", t=6, facts=[("order_number", "100234")]))
    g.observe(contact("blocked", "email:unknown", t=7))
    g.unlink("social:twitter:giulia_r", "fact:order_number:100234", command_id="op-1", at_ms=T0 + 8 * MIN)


def test_the_state_is_stored_in_named_records():
    g = IdentityGraph({})
    _the_old_form_story(g)
    assert {tuple(sorted(v)) for k, v in g.store.items() if k.startswith("e:")} == {
        ("anchor", "customer_id", "events", "nodes", "occurred_ms")
    }
    assert {tuple(sorted(v)) for k, v in g.store.items() if k.startswith("n:")} == {
        ("contacts", "customer_id", "unlinked")
    }
    assert ContactRecord.from_json(g.store["e:order"]).anchor == "email:giulia.rossi@example.it"
    assert NodeRecord.from_json(g.store["n:social:twitter:giulia_r"]).unlinked == ("fact:order_number:100234",)


def _v1_event(event: dict) -> dict:
    return {k: v for k, v in event.items() if k not in ("gen", "moved_identities")}


def _before_v2(record):
    """A stored record without the event fields identities.v1 v2 added (``gen``,
    ``moved_identities``): the recorded old form predates them."""
    if isinstance(record, ContactRecord):
        events = tuple(_v1_event(e) for e in record.events)
        return ContactRecord(record.occurred_ms, record.anchor, record.nodes, record.customer_id, events)
    return record


def test_a_state_in_the_old_form_reads_as_the_same_graph_and_goes_on_the_same_way():
    old = json.loads(OLD_FORM.read_text())
    assert all("t" in v for k, v in old.items() if k.startswith("e:"))  # the fixture is the old form
    new = IdentityGraph({})
    _the_old_form_story(new)
    loaded = IdentityGraph(old)
    # the same records, read from either form
    assert old.keys() == new.store.keys()
    for key in old:
        read = ContactRecord.from_json if key.startswith("e:") else NodeRecord.from_json
        assert _before_v2(read(old[key])) == _before_v2(read(new.store[key])), key
    for eid in ("order", "dm", "blocked"):
        assert loaded.customer_of(eid) == new.customer_of(eid)
    for node in (
        "email:giulia.rossi@example.it",
        "phone:+393471234567",
        "social:twitter:giulia_r",
        "fact:order_number:100234",
    ):
        assert loaded.node_customer(node) == new.node_customer(node)
    # a duplicate gets the stored answer again; new evidence and another unlink change both alike
    later = [
        lambda g: g.observe(contact("dm", "social:twitter:giulia_r", t=6, facts=[("order_number", "100234")])),
        lambda g: g.observe(contact("tweet", "social:twitter:giulia_r", "email:giulia.rossi@example.it", t=9)),
        lambda g: g.observe(contact("call", "phone:+393471234567", t=10)),
        lambda g: g.unlink(
            "email:giulia.rossi@example.it", "phone:+393471234567", command_id="op-2", at_ms=T0 + 11 * MIN
        ),
    ]
    for step in later:
        got, want = step(loaded), step(new)
        assert (got.customer_id, got.rekeyed, got.duplicate) == (want.customer_id, want.rekeyed, want.duplicate)
        assert [_v1_event(e) for e in got.events] == [_v1_event(e) for e in want.events]
    for eid in ("order", "dm", "blocked", "tweet", "call"):
        assert loaded.customer_of(eid) == new.customer_of(eid)
    # the two stores hold the same records; what changed since was written in the named form
    assert old.keys() == new.store.keys()
    for key in old:
        read = ContactRecord.from_json if key.startswith("e:") else NodeRecord.from_json
        assert _before_v2(read(old[key])) == _before_v2(read(new.store[key])), key
        if "t" not in old[key] and "c" not in old[key]:  # rewritten in the named form
            assert old[key].keys() == new.store[key].keys(), key
    assert any("t" not in v and "c" not in v for v in old.values())


def test_identity_event_ids_are_deterministic():
    _, c1 = feed([GIULIA_ORDER, GIULIA_TWEET, GIULIA_DM])
    _, c2 = feed([GIULIA_ORDER, GIULIA_TWEET, GIULIA_DM])
    assert [e["event_id"] for ch in c1 for e in ch.events] == [e["event_id"] for ch in c2 for e in ch.events]
    assert all(uuid.UUID(e["event_id"]).version == 5 for ch in c1 for e in ch.events)


def test_a_contact_without_identities_cannot_be_resolved():
    with pytest.raises(ValueError, match="without identities"):
        IdentityGraph({}).observe({"event_id": "e1", "occurred_at": T0, "identities": []})


def test_the_strongest_identity_is_the_anchor_the_primary_breaks_ties_and_hints_never_are():
    ev = evidence(contact("a", "phone:+393471234567", "email:g@example.it"), IdentityRules())
    assert ev.anchor == "email:g@example.it"
    ev = evidence(contact("a", "email:h@example.it", "email:g@example.it"), IdentityRules())
    assert ev.anchor == "email:h@example.it"
    ev = evidence(contact("a", "email:g@example.it~hint", "phone:+393471234567"), IdentityRules(hint_links=True))
    assert ev.anchor == "phone:+393471234567"


def test_resolve_sets_customer_id_on_a_copy_and_leaves_the_input_alone(full_contact):
    record = to_record(full_contact, RECORDED_AT)
    before = copy.deepcopy(record)
    g = IdentityGraph({})
    resolved = resolve(record, g.observe(record).customer_id)
    assert record == before and record["customer_id"] is None
    assert resolved["customer_id"] == g.customer_of(record["event_id"])
    assert {k: v for k, v in resolved.items() if k != "customer_id"} == {
        k: v for k, v in before.items() if k != "customer_id"
    }
