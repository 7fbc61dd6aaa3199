#!/usr/bin/env bash
# Build a runnable Apicurio Registry 3.0.9 (Confluent-compatible API, in-memory H2) from Maven Central artifacts.
# Output: target/threadline-local-registry-0.0.0-local-runner.jar + target/lib/ (Quarkus legacy-jar layout).
# Build-time Quarkus config is passed as -D (system properties outrank the app's own application.properties):
#  - mysql/mssql/postgresql named datasources (injected unconditionally by the app) re-declared as H2,
#    because their JDBC extensions' deployment/devservices artifacts are not on the reachable Central;
#  - the 3.0.6 config-definitions jar's Info.class (+ its stale jandex index) is dropped in favour of the shim in src/.
set -euo pipefail
cd "$(dirname "$0")"
./make-stubs.sh
exec mvn -B -DskipExternalRepos \
  -Dquarkus.datasource.mysql.db-kind=h2 \
  -Dquarkus.datasource.mssql.db-kind=h2 \
  -Dquarkus.datasource.postgresql.db-kind=h2 \
  '-Dquarkus.class-loading.removed-resources."io.apicurio:apicurio-registry-config-definitions"=io/apicurio/common/apps/config/Info.class,META-INF/jandex.idx' \
  clean package "$@"
