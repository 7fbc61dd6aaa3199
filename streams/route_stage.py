"""The route stage: contacts.v1 (every worker, six partitions) → the one-partition graph topic.

It decodes each contact once to check it (an undecodable record, or a contact without
identities, goes to streams.dlq.v1 with its reason and the partition moves on) and forwards the
contact's bytes unchanged, a batch at a time.
"""

from __future__ import annotations

import faust

from schemas.codec import Codec
from streams.stage import DECODE_ERRORS, Outputs, StageContext


def route_stage(ctx: StageContext, codec: Codec, graph_topic: str):
    async def route(stream: faust.StreamT) -> None:
        async for events in ctx.batches(stream, "route"):
            out = Outputs()
            for event in events:
                try:
                    record = codec.decode(event.value).record
                    if not record.get("identities"):
                        raise ValueError("a contact without identities cannot be resolved")
                except DECODE_ERRORS as exc:
                    ctx.to_dlq(out, event, f"{type(exc).__name__}: {exc}")
                    continue
                out.add(graph_topic, event.key, event.value, {"kind": "contact"})
            await ctx.produce(out)

    return route
