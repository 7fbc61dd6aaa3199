"""The event contract: Avro schemas, every published version kept, and the codec.

Layout: ``schemas/avro/<subject>/v<N>.avsc``. ``v<N>`` with the highest N is the schema
writers use today; earlier files are the published history that readers must still decode,
checked for BACKWARD_TRANSITIVE compatibility by the test suite.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import fastavro

AVRO_DIR = Path(__file__).parent / "avro"

# The record each subject folder holds, by the name producers use in code.
CONTACT = "contact"
IDENTITY_EVENT = "identity_event"
CONVERSATION_EVENT = "conversation_event"
CUSTOMER_PROFILE = "customer_profile"
ERASURE = "erasure"


@dataclass(frozen=True)
class SchemaVersion:
    subject: str
    version: int
    path: Path
    raw: dict
    parsed: dict

    @property
    def fullname(self) -> str:
        ns = self.raw.get("namespace")
        return f"{ns}.{self.raw['name']}" if ns else self.raw["name"]

    @property
    def text(self) -> str:
        """Canonical JSON text, as registered with the schema registry."""
        return json.dumps(self.raw, separators=(",", ":"), sort_keys=True)


def subjects() -> list[str]:
    return sorted(p.name for p in AVRO_DIR.iterdir() if p.is_dir())


@lru_cache(maxsize=None)
def versions(subject: str) -> tuple[SchemaVersion, ...]:
    """Every published version of one subject, oldest first; parsed once per process."""
    folder = AVRO_DIR / subject
    found = []
    for path in folder.glob("v*.avsc"):
        m = re.fullmatch(r"v(\d+)\.avsc", path.name)
        if not m:
            continue
        raw = json.loads(path.read_text())
        parsed = fastavro.parse_schema(raw)
        found.append(SchemaVersion(subject, int(m.group(1)), path, raw, parsed))
    if not found:
        raise KeyError(f"no schema versions under {folder}")
    return tuple(sorted(found, key=lambda v: v.version))


def latest(subject: str) -> SchemaVersion:
    return versions(subject)[-1]


@lru_cache(maxsize=None)
def latest_by_fullname() -> dict[str, SchemaVersion]:
    return {latest(s).fullname: latest(s) for s in subjects()}
