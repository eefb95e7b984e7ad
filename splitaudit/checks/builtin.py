"""Imports every built-in check module so that each registers itself."""

from . import (  # noqa: F401
    class_balance,
    exact_duplicates,
    group_leakage,
    label_conflicts,
    near_duplicates,
    pixel_duplicates,
    similar_images,
    unreadable_images,
    within_split_duplicates,
)
