"""podkit ambassadors."""
