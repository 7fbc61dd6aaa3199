"""deploy/docker/Dockerfile, checked without a Docker engine.

The image builds where Docker runs; here the Dockerfile is read as text: the commands it runs
exist in the project, what it copies exists and passes its .dockerignore, the runtime stage runs
as a non-root user and holds only the virtual environment, and the wheel it installs carries the
package data (Avro schemas, SQL migrations) that the components read at runtime.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from threadline.settings import LogFormat, Settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / "deploy" / "docker" / "Dockerfile.dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
THREADLINE = REPO / ".venv" / "bin" / "threadline"
if not THREADLINE.exists():
    THREADLINE = Path(sys.executable).with_name("threadline")
UID = 10001


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs (name → default) and the stages, each with its instructions in order; line
    continuations joined, comments dropped, ${ARG} in FROM resolved to the default."""
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        if raw.endswith("\\"):
            current += raw[:-1] + " "
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.IGNORECASE)
            assert m, line
            base = re.sub(r"\$\{(\w+)\}", lambda a: args[a.group(1)], m.group(1))
            stages.append(Stage(base, m.group(2)))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


ARGS, STAGES = parse(DOCKERFILE.read_text())
BUILDER = next(s for s in STAGES if s.name == "builder")
RUNTIME = STAGES[-1]


def env_of(stage: Stage) -> dict[str, str]:
    env = {}
    for a in stage.args("ENV"):
        for item in shlex.split(a):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def exec_form(arg: str) -> list[str]:
    value = json.loads(arg)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arg
    return value


def copies(stage: Stage) -> list[tuple[list[str], list[str], str]]:
    """(flags, sources, destination) of each COPY."""
    out = []
    for a in stage.args("COPY"):
        words = shlex.split(a)
        flags = [w for w in words if w.startswith("--")]
        rest = [w for w in words if not w.startswith("--")]
        out.append((flags, rest[:-1], rest[-1]))
    return out


def dockerignored(path: str, rules: list[str]) -> bool:
    """Docker's .dockerignore: the last pattern that matches the path or one of its parents decides."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule[1:] if negate else rule
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                j = pattern.index("]", i)
                regex += pattern[i:j + 1]
                i = j + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def ignore_rules() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_two_stages_on_python_slim():
    assert [s.name for s in STAGES] == ["builder", "runtime"]
    assert {s.base for s in STAGES} == {"python:3.11-slim"}
    # Python's version in the image satisfies the package's requires-python.
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


def test_runtime_stage_gets_only_the_virtual_environment():
    runtime_copies = copies(RUNTIME)
    assert runtime_copies == [(["--from=builder"], ["/opt/threadline"], "/opt/threadline")]
    builder_venv = [a for a in BUILDER.args("RUN") if "python -m venv /opt/threadline" in a]
    assert builder_venv, "the builder makes the environment the runtime copies"
    for run in RUNTIME.args("RUN"):
        assert not re.search(r"\b(pip|apt-get|apt|gcc|make)\b", run), f"the runtime stage builds or installs: {run}"
    assert env_of(RUNTIME)["PATH"].startswith("/opt/threadline/bin:")


def test_runtime_runs_as_a_non_root_user_that_owns_the_state_folder():
    user = RUNTIME.args("USER")[-1]
    uid, _, gid = user.partition(":")
    assert int(uid) == UID and int(gid or uid) != 0
    setup = " ".join(RUNTIME.args("RUN"))
    assert f"useradd --system --uid {UID}" in setup
    env = env_of(RUNTIME)
    home = env["THREADLINE_HOME"]
    assert home == "/var/lib/threadline"
    for folder in (home, f"{home}/secrets", f"{home}/faust"):
        assert re.search(rf"install -d -o {UID} -g {UID} -m 0[0-7]{{3}} {re.escape(folder)}(\s|$)", setup), folder
    # The worker's RocksDB tables go where the faust app puts them under THREADLINE_HOME.
    assert Settings(home=Path(home)).state_dir / "faust" == Path(f"{home}/faust")
    # No instruction after USER switches back to root.
    after = RUNTIME.instructions[[k for k, _ in RUNTIME.instructions].index("USER"):]
    assert all(k != "USER" or not a.startswith(("root", "0")) for k, a in after)


def test_runtime_settings_are_valid_threadline_settings():
    env = env_of(RUNTIME)
    threadline_env = {k.removeprefix("THREADLINE_").lower(): v for k, v in env.items() if k.startswith("THREADLINE_")}
    assert set(threadline_env) == {"home", "log_format", "gateway_host", "api_host", "ops_host"}
    settings = Settings(**threadline_env)
    assert settings.log_format is LogFormat.JSON
    assert settings.endpoints.gateway_host == settings.endpoints.api_host == settings.endpoints.ops_host == "0.0.0.0"
    defaults = Settings()
    exposed = {int(p) for a in RUNTIME.args("EXPOSE") for p in a.split()}
    assert exposed == {defaults.endpoints.gateway_port, defaults.endpoints.api_port, defaults.endpoints.worker_ops_port, defaults.endpoints.projector_ops_port}


def test_entrypoint_is_the_console_script_pyproject_declares():
    (entrypoint,) = RUNTIME.args("ENTRYPOINT")
    assert exec_form(entrypoint) == ["threadline"]
    assert PYPROJECT["project"]["scripts"]["threadline"] == "threadline.tools.cli:main"
    assert THREADLINE.name == "threadline" and THREADLINE.exists()


def _threadline_calls() -> list[list[str]]:
    """Every threadline command line the Dockerfile runs: CMD (after the ENTRYPOINT) and RUN."""
    calls = [exec_form(a) for a in RUNTIME.args("CMD")]
    for stage in STAGES:
        for run in stage.args("RUN"):
            lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command: list[str] = []
            for token in [*lexer, ";"]:
                if token in ("&&", "||", ";", "|"):
                    if command and Path(command[0]).name == "threadline":
                        calls.append(command[1:])
                    command = []
                elif set(token) <= set("<>&") or (command and set(command[-1]) <= set("<>&")):
                    command.append("")  # a redirection and its target are no arguments
                else:
                    command.append(token)
    return [[a for a in call if a] for call in calls]


def test_every_threadline_command_the_dockerfile_runs_exists():
    calls = _threadline_calls()
    assert ["--help"] in calls and len(calls) >= 2, calls
    for argv in calls:
        help_argv = argv if "--help" in argv else [*argv, "--help"]
        r = subprocess.run([str(THREADLINE), *help_argv], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"threadline {' '.join(help_argv)} → {r.returncode}: {r.stderr}"


def test_components_run_as_image_commands():
    for command in (["serve", "gateway"], ["serve", "api"], ["worker"], ["project"], ["topics", "apply"]):
        r = subprocess.run([str(THREADLINE), *command, "--help"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (command, r.stderr)


def test_copy_sources_exist_and_pass_the_dockerignore():
    rules = ignore_rules()
    sources = [src for flags, srcs, _ in copies(BUILDER) if not any(f.startswith("--from") for f in flags) for src in srcs]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        assert not dockerignored(src, rules), f"COPY {src}: excluded by {DOCKERIGNORE.name}"
    # Every top-level package the wheel holds is copied into the builder, nothing more.
    packages = {p for p in sources if (REPO / p / "__init__.py").is_file()}
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert packages == {pattern.rstrip("*") for pattern in include}
    assert {"pyproject.toml", "README.md"} <= set(sources)  # README.md: pyproject's readme


def test_dockerignore_keeps_state_environment_history_and_tests_out():
    rules = ignore_rules()
    for path in (".venv/bin/python", ".threadline/tools/docker/cli-plugins/docker-compose", ".git/HEAD",
                 "tests/unit/test_settings.py", "threadline/__pycache__/cli.cpython-311.pyc", "threadline.egg-info/PKG-INFO",
                 "deploy/local/registry/target/x.jar", "docs/benchmarks.md"):
        assert dockerignored(path, rules), path
    for path in ("pyproject.toml", "threadline/tools/cli.py", "schemas/avro/contact/v1.avsc", "projectors/migrations/0001_foundation.sql"):
        assert not dockerignored(path, rules), path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (path,) = out.glob("threadline-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_carries_the_package_data_the_components_read(wheel):
    names = set(wheel.namelist())
    for folder, pattern in (("schemas/avro", "**/*.avsc"), ("projectors/migrations", "*.sql")):
        files = sorted(p.relative_to(REPO).as_posix() for p in (REPO / folder).glob(pattern))
        assert files, folder
        assert set(files) <= names, set(files) - names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "threadline = threadline.tools.cli:main" in wheel.read(entry_points).decode()
    # Nothing the wheel holds comes from outside the folders the Dockerfile copies.
    copied = {src for _, srcs, _ in copies(BUILDER) for src in srcs}
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} <= copied
    # The package reads its schemas and migrations from inside itself, not from the checkout.
    import schemas
    from projectors import migrate

    assert Path(schemas.AVRO_DIR).parent == Path(schemas.__file__).parent
    sql = sorted(p.stem for p in (REPO / "projectors" / "migrations").glob("*.sql"))
    assert [name for name, _ in migrate.migrations()] == sql
