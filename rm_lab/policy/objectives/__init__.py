"""Policy objectives: each a config dataclass plus pure loss/advantage functions, tested against references."""
