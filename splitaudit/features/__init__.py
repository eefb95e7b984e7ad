"""Stage 2 of the pipeline: per-image features (content digest, pixel digest, perceptual hashes), computed once.

Computing encodings is kept apart from searching them (:mod:`splitaudit.neighbors`): this package only turns
records into aligned columns, through the incremental cache and a pool of workers running a pure batch function.
"""

from .cache import FeatureCache, default_cache_dir
from .extract import HashOptions, extract_batch
from .table import FeatureTable, compute_features

__all__ = ["FeatureCache", "FeatureTable", "HashOptions", "compute_features", "default_cache_dir", "extract_batch"]
