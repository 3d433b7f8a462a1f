"""Zeiler & Fergus (2014) use their tools to decide, not only to look: first-layer filter health
(§4.1, Fig. 6) and part correspondence (§4.3, Table 1) of any finished run. The Table 3
architecture ablations are registry variants (tfxfer.models.VARIANTS) run by `tfxfer experiment`."""
from tfxfer.diagnose.correspondence import diagnose_correspondence
from tfxfer.diagnose.filters import diagnose_filters

__all__ = ["diagnose_correspondence", "diagnose_filters"]
