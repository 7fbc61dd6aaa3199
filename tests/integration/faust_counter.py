"""A minimal faust worker for the client compatibility test: counts events per key in a table.

Run as a subprocess: ``python faust_counter.py worker``. Env: COUNTER_APP_ID, COUNTER_SOURCE,
COUNTER_OUTPUT, THREADLINE_KAFKA_BOOTSTRAP, COUNTER_DATADIR. The table uses the memory store,
so after a restart its state can only come back from the changelog topic.
"""

import os

import faust

app = faust.App(
    os.environ["COUNTER_APP_ID"],
    broker=f"kafka://{os.environ['THREADLINE_KAFKA_BOOTSTRAP']}",
    store="memory://",
    processing_guarantee="at_least_once",
    topic_partitions=3,
    topic_replication_factor=1,
    topic_disable_leader=True,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    datadir=os.environ["COUNTER_DATADIR"],
    # A member that died without leaving is evicted after 10 s instead of faust's default.
    broker_session_timeout=10.0,
    broker_heartbeat_interval=2.0,
)
source = app.topic(
    os.environ["COUNTER_SOURCE"], key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
)
output = app.topic(
    os.environ["COUNTER_OUTPUT"], key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
)
counts = app.Table("counts", default=int, partitions=3)


@app.agent(source)
async def count(stream):
    async for key, _value in stream.items():
        counts[key.decode()] += 1
        await output.send(key=key, value=str(counts[key.decode()]).encode())


if __name__ == "__main__":
    app.main()
