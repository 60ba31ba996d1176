"""podkit adapters."""
