"""CLI command modules, one per stage family; each exposes `register(app)`."""
