"""podkit sidecars."""
