"""Which resolution of a contact its row holds: a merge or an unmerge writes a contact again to
contacts.resolved.v1 under its new customer with the identity graph's position (header ``gen``);
the latest position wins, whatever order the records are read in. Pure, no services."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from projectors.contacts import COLUMNS as SKELETON_COLUMNS
from projectors.contacts import Contacts
from projectors.read_models import ReadModel
from projectors.rows import CONTACT, CONTACT_COLUMNS, contact_row, latest_resolutions, resolution_gen, supersedes
from tests.unit.projectors.test_rows import contact
from threadline.errors import DecodeError

ORIGIN = CONTACT_COLUMNS.index("origin_customer_id")
GEN = CONTACT_COLUMNS.index("resolved_gen")


def resolution(customer: str, gen: int, eid: str = "2f1c1a2e-0000-5000-8000-000000000001", partition: int = 0):
    return contact_row(contact(event_id=eid, customer_id=customer), partition, gen, gen)


@pytest.mark.parametrize(
    "headers, want",
    [
        ([("event_id", b"x"), ("gen", b"17"), ("customer_id", b"c")], 17),
        ([("gen", b"0")], 0),
        ([("customer_id", b"c")], 0),  # a writer from before the header
        ([], 0),
        (None, 0),
    ],
)
def test_the_resolution_order_is_the_gen_header(headers, want):
    assert resolution_gen(headers) == want


def test_a_gen_header_that_is_not_a_number_is_refused():
    with pytest.raises(DecodeError, match="gen"):
        resolution_gen([("gen", b"seven")])


def test_the_later_graph_position_wins_whatever_the_customer_ids():
    first, merged, unmerged = resolution("cust-b", 5), resolution("cust-a", 9), resolution("cust-b", 12)
    assert supersedes(merged, first) and not supersedes(first, merged)
    assert supersedes(unmerged, merged) and not supersedes(merged, unmerged)
    assert not supersedes(first, first)  # a duplicate changes nothing


def test_one_position_for_two_customers_is_decided_by_customer_id_not_by_arrival():
    a, b = resolution("cust-a", 7), resolution("cust-b", 7)
    assert supersedes(b, a) and not supersedes(a, b)


def test_every_arrival_order_keeps_the_latest_resolution_of_each_contact():
    """Merge then unmerge: first under B (5), re-keyed to A (9), back to B (12); another contact
    stays under A. The contacts.resolved.v1 records of one contact sit on their customers'
    partitions, so the projector reads them in any interleaving, duplicates included."""
    other = "2f1c1a2e-0000-5000-8000-000000000002"
    rows = [
        resolution("cust-b", 5, partition=1),
        resolution("cust-a", 9, partition=0),
        resolution("cust-b", 12, partition=1),
        resolution("cust-a", 3, eid=other, partition=0),
        resolution("cust-b", 12, partition=1),
    ]
    for order in itertools.permutations(rows):
        kept = {r[0]: (r[ORIGIN], r[GEN]) for r in latest_resolutions(list(order))}
        assert kept == {rows[0][0]: ("cust-b", 12), other: ("cust-a", 3)}


def message(headers, partition: int = 2, offset: int = 40):
    return SimpleNamespace(topic="contacts.resolved.v1", partition=partition, offset=offset, headers=headers)


def test_both_contact_projections_take_the_position_from_the_record_headers():
    decoded = SimpleNamespace(schema_fullname=CONTACT, record=contact())
    model = ReadModel("support", "support", "support", create=False)
    batch = model.new_batch()
    model.shape(batch, decoded, message([("gen", b"31")]))
    assert dict(zip(CONTACT_COLUMNS, batch.contacts[0]))["resolved_gen"] == 31
    skeleton = Contacts()
    rows = skeleton.new_batch()
    skeleton.shape(rows, decoded, message([("gen", b"31")]))
    assert dict(zip(SKELETON_COLUMNS, rows.rows[0]))["resolved_gen"] == 31
