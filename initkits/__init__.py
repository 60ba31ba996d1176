"""podkit initkits."""
