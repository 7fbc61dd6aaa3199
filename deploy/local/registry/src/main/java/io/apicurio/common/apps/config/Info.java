package io.apicurio.common.apps.config;

import jakarta.enterprise.util.Nonbinding;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * Shim overriding the 3.0.6 annotation (category was a String there; apicurio-registry-app 3.0.9 uses the enum).
 */
@Documented
@Retention(RetentionPolicy.RUNTIME)
@Target({ ElementType.FIELD, ElementType.METHOD })
public @interface Info {
    @Nonbinding ConfigPropertyCategory category() default ConfigPropertyCategory.CATEGORY_SYSTEM;
    @Nonbinding String description() default "";
    @Nonbinding String availableSince() default "";
    @Nonbinding String registryAvailableSince() default "";
    @Nonbinding String studioAvailableSince() default "";
    @Nonbinding String[] seeAlso() default {};
    @Nonbinding String[] dependsOn() default {};
}
