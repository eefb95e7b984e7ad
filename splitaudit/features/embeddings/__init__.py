"""Image embedding back-ends (pretrained CNN feature extractors)."""
