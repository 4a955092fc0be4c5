"""Pipeline definitions (compiled IR YAML lives next to them)."""
