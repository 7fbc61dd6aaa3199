"""The local stores under the identity stage's tables (``streams.identity_stage.StateTable``), and
the fenced replay of their changelogs.

A store holds a table's records as its changelog gives them (key and value: the JSON bytes of the
changelog record) and, written with them in one RocksDB write batch, where they came from
(``Position``): the offset of the last changelog record applied, the writer whose fence was in
force there, and the offset up to which the store is *verified*, known to be what a replay of the
changelog gives. ``RocksStore`` is a RocksDB database on disk (one per table, in the worker's data
dir: faust's tables' way, with their options); ``MemoryStore`` is the same in the process
(``THREADLINE_STREAMS_STORE=memory``, tests), gone with it.

Why ``verified`` apart from ``offset``: the runner writes a batch's changelog records to the store
once they are acknowledged, before it commits the input. A commit that succeeds proves those
records came before any other writer's fence (a new owner writes its fence only once the group's
new generation exists, and the coordinator refuses the old generation's commit from then on), so
the runner then marks them verified. Records the store holds past ``verified`` (the worker died,
or its commit failed, in between) are checked on the next assignment: a fence of anyone in that
range means the store may hold writes every replay skips, and it is rebuilt from the changelog's
beginning (``IdentityRunner._recover``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

FENCE_PREFIX = b'["fence",'
# Keys of the store's own records: a changelog key is JSON (a string or an array), never \x00...
_OFFSET, _WRITER, _VERIFIED = b"\x00offset", b"\x00writer", b"\x00verified"
_META = (_OFFSET, _WRITER, _VERIFIED)
# RocksDB's memory per table, at most: two write buffers of 16 MiB and a block cache of 32 MiB
# (faust's defaults, for many partitions' tables, are three of 64 MiB and 2 GiB)
WRITE_BUFFER_BYTES, WRITE_BUFFERS, BLOCK_CACHE_BYTES = 16 * 1024**2, 2, 32 * 1024**2
# Bloom filters, for reads of absent keys: 10 bits a key in the files (~1% false positives; faust's
# default is 3, ~15%), and a tenth of each write buffer on its keys. A get of an absent key in a
# graph store of 80,000 keys: ~5 µs without, ~1 µs with (most of it the search of the buffers).
BLOOM_BITS_PER_KEY, MEMTABLE_BLOOM_RATIO = 10, 0.1


@dataclass(frozen=True)
class Position:
    """Where a store is in its changelog: ``offset`` the last record applied (-1: none, a fresh
    store), ``writer`` the fence writer in force at that record (None: no fence yet),
    ``verified`` the offset up to which the store is what a replay gives."""

    offset: int = -1
    writer: bytes | None = None
    verified: int = -1


class FencedReplay:
    """A changelog's records read in offset order with the fence rules: a fence record names the
    one writer from there on, and a later record headed by another writer is skipped; records
    without a writer header (faust's tables' changelogs, erasure's tombstones) always apply.
    ``writer`` is the writer in force before the first record (a store's ``Position.writer``)."""

    def __init__(self, writer: bytes | None = None):
        self.writer = writer
        self.skipped = 0
        # keys whose latest record so far was skipped: log compaction, which keeps a key's latest
        # record only, would leave that record and drop the one before it that applied
        self.dangling: set[bytes] = set()

    def apply(
        self, records: Iterable[tuple[bytes, bytes | None, bytes | None]]
    ) -> Iterator[tuple[bytes, bytes | None]]:
        """The ``(key, value)`` of each of ``records`` (``(key, value, writer header)``) that applies."""
        for key, value, writer in records:
            if key.startswith(FENCE_PREFIX):
                self.writer = orjson.loads(key)[1].encode()
                continue
            if writer is not None and self.writer is not None and writer != self.writer:
                self.skipped += 1
                self.dangling.add(key)
                continue
            self.dangling.discard(key)
            yield key, value


def is_fence(key: bytes | None) -> bool:
    return key is not None and key.startswith(FENCE_PREFIX)


class MemoryStore:
    """A table's records and position held in this process."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self._position = Position()

    def position(self) -> Position:
        return self._position

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def write(
        self, items: Iterable[tuple[bytes, bytes | None]], offset: int, writer: bytes | None, *, verified: bool
    ) -> None:
        data = self.data
        for key, value in items:
            if value is None:
                data.pop(key, None)
            else:  # a copy of its own size: orjson's bytes keep the capacity of its output buffer
                data[bytes(memoryview(key))] = bytes(memoryview(value))
        self._position = Position(offset, writer, offset if verified else self._position.verified)

    def verify(self, offset: int) -> None:
        p = self._position
        self._position = Position(p.offset, p.writer, max(p.verified, min(offset, p.offset)))

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self.data.items()))

    def __len__(self) -> int:
        return len(self.data)

    def reset(self) -> None:
        self.data.clear()
        self._position = Position()

    def close(self) -> None:
        pass


class RocksStore:
    """A table's records and position in a RocksDB database at ``path`` (opened on first use,
    with the options of faust's RocksDB tables, smaller buffers and cache). Each ``write`` is one
    write batch: the records and the position they bring the store to, together or not at all."""

    def __init__(self, path: Path):
        self.path = path
        self._db: Any = None

    @property
    def db(self) -> Any:
        if self._db is None:
            import rocksdict
            from faust.stores.rocksdb import RocksDBOptions

            self.path.parent.mkdir(parents=True, exist_ok=True)
            options = RocksDBOptions(
                write_buffer_size=WRITE_BUFFER_BYTES,
                max_write_buffer_number=WRITE_BUFFERS,
                block_cache_size=BLOCK_CACHE_BYTES,
                bloom_filter_size=BLOOM_BITS_PER_KEY,
                use_rocksdict=True,
            ).as_options()
            # most reads of the graph are of keys it has never held (a new contact, its new
            # identities): a bloom filter on the write buffers too answers them without a search
            options.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO)
            options.set_memtable_whole_key_filtering(True)
            # as faust's RocksDBOptions.open, with these options
            self._db = rocksdict.Rdict(str(self.path), options=options, access_type=rocksdict.AccessType.read_write())
            self._db.set_read_options(rocksdict.ReadOptions())
        return self._db

    def position(self) -> Position:
        db = self.db
        offset, writer, verified = db.get(_OFFSET), db.get(_WRITER), db.get(_VERIFIED)
        return Position(
            int(offset) if offset is not None else -1,
            writer or None,
            int(verified) if verified is not None else -1,
        )

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def write(
        self, items: Iterable[tuple[bytes, bytes | None]], offset: int, writer: bytes | None, *, verified: bool
    ) -> None:
        import rocksdict

        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in items:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(_OFFSET, str(offset).encode())
        batch.put(_WRITER, writer or b"")
        if verified:
            batch.put(_VERIFIED, str(offset).encode())
        self.db.write(batch)

    def verify(self, offset: int) -> None:
        p = self.position()
        if min(offset, p.offset) > p.verified:
            self.db.put(_VERIFIED, str(min(offset, p.offset)).encode())

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.db.items():
            if key not in _META:
                yield key, value

    def __len__(self) -> int:
        """RocksDB's estimate of the number of records (its own records left out)."""
        return max(0, self.db.property_int_value("rocksdb.estimate-num-keys") - len(_META))

    def reset(self) -> None:
        """Every record and the position dropped: the database deleted and made again."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


TableStore = MemoryStore | RocksStore
