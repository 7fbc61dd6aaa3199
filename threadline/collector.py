"""The garbage collector of a long-running service, tuned once it has started.

CPython collects the young generation every 700 net new container objects and, every tenth and
hundredth time, the older generations, whose collections walk every object the process holds:
its libraries, its parsed schemas, what it keeps in memory. A service that handles many records
or requests allocates containers that reference counting frees soon after (a record's dicts, a
request's objects), so at CPython's thresholds it spends much of its time walking objects that
are alive for good. Once the service has started, what exists then is moved out of the
collector's sight (``gc.freeze``: those objects live as long as the process) and the young
generation's threshold raised: collections then follow real cyclic garbage, and what waits for
a collection stays bounded (a few MB at most).
"""

from __future__ import annotations

import gc


def tune_gc(gen0_threshold: int) -> None:
    """Collect, freeze what survived, and collect the young generation every ``gen0_threshold``
    net new container objects (the older generations' thresholds are kept)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0_threshold, *gc.get_threshold()[1:])
