"""streams/identity_store.py RocksStore: the identity tables' local RocksDB stores."""

from __future__ import annotations

from streams.identity_store import RocksStore


def test_a_rocks_store_answers_absent_keys_from_bloom_filters_on_its_files_and_its_write_buffers(tmp_path):
    """Most of the graph's reads are of keys it never held (a new contact, its new identities):
    the store is opened with bloom filters on its write buffers' keys as well as in its files, as
    RocksDB's options file of the database records."""
    store = RocksStore(tmp_path / "graph.db")
    store.write([(b'"n:a"', b"{}")], 0, b"w", verified=True)
    assert store.get(b'"n:b"') is None and store.get(b'"n:a"') == b"{}"
    store.close()
    options = "\n".join(p.read_text() for p in (tmp_path / "graph.db").glob("OPTIONS-*"))
    assert "memtable_whole_key_filtering=true" in options
    assert "memtable_prefix_bloom_size_ratio=0.1" in options
    assert "filter_policy=bloomfilter" in options
