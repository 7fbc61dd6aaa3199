"""A client for a Confluent-compatible schema registry (Apicurio's /apis/ccompat/v7).

Only the two calls the codec needs: register a subject's schema (idempotent: the registry
returns the existing id for a schema it already has) and fetch a schema by id.
"""

from __future__ import annotations

import json

import httpx

from threadline.errors import RegistryUnavailable, SchemaError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryClient:
    def __init__(self, url: str, *, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=timeout, headers={"Accept": CONTENT_TYPE})

    def _call(self, method: str, path: str, body: dict | None = None) -> dict | list:
        try:
            resp = self._http.request(
                method,
                f"{self.url}{path}",
                content=json.dumps(body) if body is not None else None,
                headers={"Content-Type": CONTENT_TYPE} if body is not None else None,
            )
        except httpx.TransportError as exc:
            raise RegistryUnavailable(f"schema registry at {self.url} did not answer: {exc}") from exc
        if resp.status_code >= 500:
            raise RegistryUnavailable(f"schema registry answered {resp.status_code}: {resp.text[:200]}")
        if resp.status_code >= 400:
            raise SchemaError(f"schema registry refused {method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json()

    def register(self, subject: str, schema_text: str) -> int:
        out = self._call("POST", f"/subjects/{subject}/versions", {"schema": schema_text, "schemaType": "AVRO"})
        return int(out["id"])

    def schema_by_id(self, schema_id: int) -> str:
        return self._call("GET", f"/schemas/ids/{schema_id}")["schema"]

    def subjects(self) -> list[str]:
        """The registry's subjects (Apicurio lists at most 1,000: ``versions`` asks for one)."""
        return list(self._call("GET", "/subjects"))

    def versions(self, subject: str) -> list[int]:
        """The versions registered under ``subject`` (SchemaError when it has none)."""
        return [int(v) for v in self._call("GET", f"/subjects/{subject}/versions")]

    def set_compatibility(self, subject: str, level: str = "BACKWARD_TRANSITIVE") -> None:
        self._call("PUT", f"/config/{subject}", {"compatibility": level})

    def close(self) -> None:
        self._http.close()
