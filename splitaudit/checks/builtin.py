"""Imports every built-in check module so that each registers itself."""

from . import (  # noqa: F401
    class_balance,
    difficulty,
    exact_duplicates,
    group_leakage,
    image_properties,
    label_conflicts,
    leak_impact,
    near_duplicates,
    pixel_duplicates,
    separability,
    similar_images,
    split_distinguishability,
    unreadable_images,
    within_split_duplicates,
)
