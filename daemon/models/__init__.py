"""Model registry, pulling, verification and conversion."""
