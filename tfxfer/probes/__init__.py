"""Feature generalization: per-layer linear probes with few-shot curves against a network trained
from scratch (Zeiler & Fergus 2014, §5.2-5.3), and layer-by-layer similarity of two networks (CKA)."""
from tfxfer.probes.probe import probe
from tfxfer.probes.similarity import similarity

__all__ = ["probe", "similarity"]
