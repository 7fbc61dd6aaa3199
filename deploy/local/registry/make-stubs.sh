#!/usr/bin/env bash
# Maven Central (as reachable here) lacks a few artifacts of Apicurio Registry 3.0.9:
#   io.apicurio:apicurio-registry:3.0.9 (parent pom)            -> copy of 3.0.7 parent, version renamed
#   io.apicurio:apicurio-registry-config-index-deployment:3.0.9 -> Maven relocation to 3.0.6
# (config-definitions, protobuf-schema-utilities and utils-kafka are pinned in pom.xml's dependencyManagement).
# This writes them into ./stub-repo (a file:// repository declared in pom.xml). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
REPO=stub-repo/io/apicurio
# Copy the 3.0.7 parent out of whatever local repository Maven uses (~/.m2 or -Dmaven.repo.local).
# Run from an empty folder: here, Maven would first try to read pom.xml, which needs these stubs.
here=$(pwd)
(cd "$(mktemp -d)" && mvn -B -q dependency:copy -Dartifact=io.apicurio:apicurio-registry:3.0.7:pom \
  -DoutputDirectory="$here/stub-repo/.parent")
mkdir -p "$REPO/apicurio-registry/3.0.9" "$REPO/apicurio-registry-config-index-deployment/3.0.9"
sed '0,/<version>3.0.7<\/version>/s//<version>3.0.9<\/version>/' \
  stub-repo/.parent/apicurio-registry-3.0.7.pom \
  > "$REPO/apicurio-registry/3.0.9/apicurio-registry-3.0.9.pom"
cat > "$REPO/apicurio-registry-config-index-deployment/3.0.9/apicurio-registry-config-index-deployment-3.0.9.pom" <<'POM'
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.apicurio</groupId>
  <artifactId>apicurio-registry-config-index-deployment</artifactId>
  <version>3.0.9</version>
  <distributionManagement>
    <relocation><version>3.0.6</version></relocation>
  </distributionManagement>
</project>
POM
echo "stubs written under $(pwd)/stub-repo"
