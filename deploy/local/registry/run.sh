#!/usr/bin/env bash
# Run the locally built Apicurio Registry 3.0.9 (H2 storage: in memory, or REGISTRY_DB_URL, e.g. jdbc:h2:file:/path/db) on 127.0.0.1:${REGISTRY_PORT:-18081}.
# Confluent-compatible API: http://127.0.0.1:${REGISTRY_PORT:-18081}/apis/ccompat/v7
set -euo pipefail
cd "$(dirname "$0")"
JAVA="${JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}/bin/java"
exec "$JAVA" ${REGISTRY_JAVA_OPTS:--Xmx256m -XX:+UseSerialGC} \
  -Dquarkus.http.host=127.0.0.1 \
  -Dquarkus.http.port="${REGISTRY_PORT:-18081}" \
  -Dquarkus.oidc.tenant-enabled=false \
  -Dquarkus.oidc.auth-server-url=http://127.0.0.1:1/oidc-disabled \
  -Dquarkus.oidc.token-path=http://127.0.0.1:1/oidc-disabled \
  -Dapicurio.storage.kind=sql \
  -Dapicurio.storage.sql.kind=h2 \
  -Dapicurio.datasource.url="${REGISTRY_DB_URL:-jdbc:h2:mem:registry}" \
  -Dapicurio.datasource.jdbc.initial-size=2 \
  -Dapicurio.datasource.jdbc.min-size=2 \
  -Dapicurio.datasource.jdbc.max-size=20 \
  -Dapicurio.storage.snapshot.location=/tmp \
  -Dapicurio.import.work-dir=/tmp \
  -jar target/threadline-local-registry-0.0.0-local-runner.jar "$@"
