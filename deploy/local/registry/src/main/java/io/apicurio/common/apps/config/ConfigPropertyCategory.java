package io.apicurio.common.apps.config;

/**
 * Shim: apicurio-registry-config-definitions 3.0.9 (which defines this enum) is absent from the reachable
 * Maven Central; 3.0.6 is used instead, which lacks it. Constants = those referenced by apicurio-registry-app 3.0.9.
 */
public enum ConfigPropertyCategory {
    CATEGORY_API, CATEGORY_AUTH, CATEGORY_CACHE, CATEGORY_CCOMPAT, CATEGORY_DOWNLOAD, CATEGORY_GITOPS,
    CATEGORY_HEALTH, CATEGORY_IMPORT, CATEGORY_LIMITS, CATEGORY_REDIRECTS, CATEGORY_REST, CATEGORY_SEMVER,
    CATEGORY_STORAGE, CATEGORY_SYSTEM, CATEGORY_UI, CATEGORY_HIDDEN
}
