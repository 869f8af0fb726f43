"""Layer 3: content-hashed artifacts under a storage root (see store.py)."""

from raylth.store.artifact import Artifact, Partial
from raylth.store.store import Store

__all__ = ["Artifact", "Partial", "Store"]
