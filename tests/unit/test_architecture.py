"""The layers of the README's architecture section hold, and stay held: import-linter's contracts
(pyproject.toml, [tool.importlinter]) pass on the tree, and fail when a forbidden import is added
(kept as a test, so a contract that cannot fail is noticed). The README's list of top-level
packages is the list of packages on disk. ruff finds no unused or undefined name and would reformat no file; mypy finds no
type error in the kernel and the pure cores."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("threadline", "connectors", "streams", "projectors", "schemas")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_import_contracts_hold():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "broken" in done.stdout and "0 broken" in done.stdout


@pytest.fixture
def tree_copy(tmp_path) -> Path:
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    "importer, imported, contract",
    [
        ("threadline/errors.py", "connectors.gateway", "Kernel"),
        ("threadline/settings.py", "threadline.tools.stack", "Kernel"),
        ("schemas/codec.py", "streams.app", "Contract"),
        ("projectors/rows.py", "streams.identity", "Features are independent"),
        ("connectors/contact.py", "threadline.tools.bench", "Features import no tool"),
        ("streams/identity.py", "streams.identity_stage", "No import loops"),
        ("threadline/tools/stack/kafka_broker.py", "threadline.tools.stack.setup", "No import loops"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tree_copy, importer, imported, contract):
    path = tree_copy / importer
    path.write_text(path.read_text() + f"\n\ndef _forbidden():\n    import {imported}  # noqa: F401\n")
    done = lint_imports(tree_copy)
    assert done.returncode == 1, done.stdout[-2000:]
    broken = [line for line in done.stdout.splitlines() if " BROKEN" in line]
    # the contract the import breaks; an import into the kernel also breaks, indirectly, the
    # contracts of what depends on the kernel
    assert any(line.startswith(contract) for line in broken), done.stdout[-2000:]


def test_the_readme_lists_the_top_level_packages_there_are():
    section = architecture_section()
    listed = set(re.findall(r"^\| `([a-z_]+)/`", section, flags=re.M))
    on_disk = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}
    assert on_disk <= listed, f"packages not in the README: {sorted(on_disk - listed)}"
    assert {name for name in listed if (REPO / name).is_dir()} == listed, "the README lists folders that do not exist"


def architecture_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Architecture")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


PATH_LIKE = re.compile(r"^[\w./-]+(/|\.(py|md|sql|avsc|lua|sh|xml|yaml|json|toml))$")


def named_paths(section: str) -> list[tuple[str, str]]:
    """(what the README says, the path it means): the files and folders each row of the table
    names, relative to the row's folder, and every path the section names from the top."""
    out = []
    for folder, holds in re.findall(r"^\| `([\w./-]+/)` \| (.*) \|$", section, flags=re.M):
        out.append((folder, folder))
        for token in re.findall(r"`([^`]+)`", holds):
            if PATH_LIKE.match(token) and "<" not in token:
                out.append((f"{folder} row: {token}", folder + token))
    tops = {p.name for p in REPO.iterdir() if not p.name.startswith(".")}  # not the state folder (.threadline)
    for token in re.findall(r"`([^`\s]+)`", section):
        if "/" in token and "<" not in token and token.split("/")[0] in tops:
            out.append((token, token))
    return out


def test_every_path_the_readme_architecture_section_names_exists():
    paths = named_paths(architecture_section())
    assert len(paths) > 40  # the table names the kernel's modules, the tools, the features' files, the docs
    missing = [said for said, path in paths if not (REPO / path).exists()]
    assert not missing, f"the README's architecture section names paths that do not exist: {missing}"


def test_the_path_check_sees_a_renamed_module():
    section = architecture_section().replace("`table.py`", "`registry.py`", 1)
    assert ("connectors/ row: registry.py", "connectors/registry.py") in named_paths(section)
    assert not (REPO / "connectors/registry.py").exists()


def test_ruff_finds_no_unused_or_undefined_names():
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run(
        [str(ruff), "check", "--output-format", "concise", "."], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:]


def test_ruff_format_leaves_every_file_as_it_is():
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run([str(ruff), "format", "--check", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]


def test_mypy_finds_no_type_errors_in_the_kernel_and_the_pure_cores():
    """[tool.mypy] in pyproject.toml names the files: the kernel and the features' pure cores."""
    mypy = Path(sys.executable).with_name("mypy")
    done = subprocess.run([str(mypy)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Success: no issues found" in done.stdout, done.stdout[-1000:]


# Names several packages share because each holds the same job for its package: the package
# itself, the commands a feature registers (cli.py), its benchmark suites (bench.py) and its
# exceptions under the kernel's tree (errors.py).
SHARED_NAMES = {"__init__", "cli", "bench", "errors"}


def test_no_two_modules_share_a_name_unless_they_share_the_job():
    seen: dict[str, list[str]] = {}
    for name in PACKAGES:
        for path in (REPO / name).rglob("*.py"):
            seen.setdefault(path.stem, []).append(str(path.relative_to(REPO)))
    shared = {stem: sorted(paths) for stem, paths in seen.items() if len(paths) > 1 and stem not in SHARED_NAMES}
    assert not shared, f"one name, several modules: {shared}"
