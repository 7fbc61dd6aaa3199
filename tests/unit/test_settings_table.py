"""The README's settings tables list every THREADLINE_* variable the code reads: each field of
the settings model, and every variable read from the environment directly (a string literal that
is exactly a THREADLINE_* name in the code, the test fixtures, or a shell script of the project)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from threadline.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CODE = ("threadline", "connectors", "streams", "projectors", "schemas")
NAME = re.compile(r"^THREADLINE_[A-Z0-9_]*[A-Z0-9]$")  # a prefix ("THREADLINE_KAFKA_") is not a variable


def documented() -> set[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Settings") : text.index("## Architecture")]
    names: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `THREADLINE_"):
            continue
        cell = line.split("|")[1]
        found = re.findall(r"`(THREADLINE_[A-Z0-9_]+)`", cell)
        names.update(found)
        for full, suffix in re.findall(r"`(THREADLINE_[A-Z0-9_]+)` \(or `(_[A-Z0-9_]+)`\)", cell):
            names.add(full + suffix)
    return names


def read_by_code() -> set[str]:
    names = {f"THREADLINE_{name.upper()}" for name in Settings.flat_defaults()}
    files = [p for d in CODE for p in (REPO / d).rglob("*.py")] + list((REPO / "tests").rglob("conftest.py"))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.match(node.value):
                names.add(node.value)
    for script in [REPO / ".ci" / "run", REPO / "Makefile", *REPO.glob("deploy/**/*.sh")]:
        names.update(re.findall(r"\$\{?(THREADLINE_[A-Z0-9_]+)", script.read_text()))
    return names


def test_every_variable_the_code_reads_is_in_the_readme():
    assert sorted(read_by_code() - documented()) == []


def test_the_readme_lists_no_variable_the_code_does_not_read():
    assert sorted(documented() - read_by_code()) == []
