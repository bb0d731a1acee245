"""Metric implementations: scoring cores first, the plugin API that wraps them later."""
