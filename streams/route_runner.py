"""The route stage's runner: contacts.v1 (six partitions) → the one-partition graph topic, read with
aiokafka's batch API (``streams.batch_runner``), not faust's per-record consume path.

The stage holds no state, so it needs nothing of faust but a consumer group: every worker running
the stage is a member of ``route_group`` (the worker's app id + ``-route``) and owns some of
contacts.v1's partitions. Each contact is read once to check it (its identities and times, the rest
skipped but checked as the codec reads it: ``streams.identity_stage.ContactReader``); an
undecodable record, or a contact without identities, goes to streams.dlq.v1 with its reason, and
the partition moves on. Its bytes are forwarded unchanged, headed ``kind: contact``; a batch's records are
acknowledged before its offset is committed. A crash or a rebalance before the commit forwards
the batch again: the graph takes a contact it has seen as a duplicate (no state changes, the same
outputs). Upgrading from the faust agent, each partition starts where the worker's faust group
had committed it.
"""

from __future__ import annotations

from typing import Any

from schemas.codec import Codec
from streams.batch_runner import BatchRunner, stage_group
from streams.identity_stage import ROUTE_FIELDS, ContactReader
from streams.stage import DECODE_ERRORS, Letter, Outputs, StageContext
from threadline.settings import Settings


def route_group(app_id: str) -> str:
    """The consumer group of the route stage of the workers of ``app_id``."""
    return stage_group(app_id, RouteRunner.stage)


class RouteRunner(BatchRunner):
    stage = "route"

    def __init__(
        self,
        settings: Settings,
        app_id: str,
        contacts_topic: str,
        graph_topic: str,
        ctx: StageContext,
        codec: Codec,
        **kwargs: Any,
    ):
        super().__init__(settings, app_id, [contacts_topic], ctx, **kwargs)
        self.codec, self.graph_topic = codec, graph_topic
        # the check reads the identities and the times, the rest skipped (but checked as the codec
        # reads it); the full decode for anything the projection does not read, so the errors and
        # the dead letters are the codec's
        self.reader = ContactReader(codec, ROUTE_FIELDS)

    def process(self, records: list, out: Outputs) -> None:
        read, graph, forward = self.reader.read, self.graph_topic, out.records.append
        headers = {"kind": "contact"}
        for r in records:
            try:
                record = read(r.value)[0]
                if not record.get("identities"):
                    raise ValueError("a contact without identities cannot be resolved")
            except DECODE_ERRORS as exc:
                self.ctx.to_dlq(out, Letter(r, r.value), f"{type(exc).__name__}: {exc}")
                continue
            forward((graph, r.key, r.value, headers, 0))
