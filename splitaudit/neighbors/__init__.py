"""Stage 3 of the pipeline: find which images match which, from the feature columns alone."""

from .binary import HashPairs, hash_pairs
from .groups import components, groups_by_key, pairs_in_groups

__all__ = ["HashPairs", "components", "groups_by_key", "hash_pairs", "pairs_in_groups"]
