"""Judges against people: how far a metric's per-image scores agree with human ratings (`evalkit judge`)."""
