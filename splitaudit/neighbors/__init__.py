"""Stage 3 of the pipeline: find which images match which, from the feature columns alone.

Pure functions over arrays, one module a step: ``binary`` (Hamming-radius search over perceptual hashes), ``dense``
(embedding kNN candidates), ``confirm`` (aligned pixel correlation of candidate pairs), ``thresholds`` (the
dataset's own calibration of 'similar'), ``matches`` (every view's pairs merged with their evidence) and ``groups``
(connected copies). :class:`splitaudit.checks.AuditContext` calls them once per run and remembers the answers.
"""

from .binary import HashPairs, hash_pairs
from .groups import components, groups_by_key, pairs_in_groups
from .matches import DensePairs, Matches, merge_matches

__all__ = ["DensePairs", "HashPairs", "Matches", "components", "groups_by_key", "hash_pairs", "merge_matches", "pairs_in_groups"]
