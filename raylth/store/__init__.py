"""Layer 3: content-hashed artifacts under a storage root (see store.py)."""

from raylth.store.store import Artifact, Partial, Store

__all__ = ["Artifact", "Partial", "Store"]
