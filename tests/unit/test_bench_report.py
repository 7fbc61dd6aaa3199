"""threadline/tools/bench.py merge_report (``threadline bench --only``): the run's sections
replace those of the same title, the others stay, the machine section says what was measured."""

from __future__ import annotations

from threadline.benchkit import Section
from threadline.tools.bench import merge_report, write_report


def test_a_partial_run_replaces_its_sections_and_keeps_the_others(tmp_path):
    path = tmp_path / "benchmarks.md"
    write_report(path, {"date": "old"}, [Section("Codec", text=["codec figures, old run"]),
                                         Section("Streams", text=["streams figures, old run"]),
                                         Section("Projection", text=["projection figures, old run"])])
    merge_report(path, {"date": "new"}, [Section("Streams", text=["streams figures, new run"]),
                                         Section("Identity", text=["identity figures, new run"])])
    text = path.read_text()
    assert "codec figures, old run" in text and "projection figures, old run" in text
    assert "streams figures, new run" in text and "streams figures, old run" not in text
    assert "identity figures, new run" in text
    assert text.count("## Machine") == 1 and "- **date**: new" in text and "- **date**: old" not in text
    assert "sections measured in this run**: Streams, Identity" in text
    assert text.index("## Codec") < text.index("## Streams") < text.index("## Projection") < text.index("## Identity")
