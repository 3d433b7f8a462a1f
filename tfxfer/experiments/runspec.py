"""RunSpec: dataset + split + arch + treatment + n + recipe + seed. Its stable hash is the run id."""
from __future__ import annotations

import dataclasses
import hashlib
import json

from tfxfer.config import Config
from tfxfer.treatments import check_n, get_treatment

# Sections that change what a run computes. `out` is where it goes and `training` how it is
# spread over devices, neither of which makes it a different network.
_IDENTITY = ("dataset", "split", "arch", "recipe", "seed")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    treatment: str
    n: int | None  # normalized: 0 for base nets
    config: Config

    def __post_init__(self):
        object.__setattr__(self, "n", check_n(get_treatment(self.treatment), self.n))

    @property
    def run_id(self) -> str:
        cfg = self.config.to_dict()
        ident = {"treatment": self.treatment, "n": self.n, **{k: cfg[k] for k in _IDENTITY}}
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.treatment}{self.n or ''}-{digest}"

    @property
    def base(self) -> "RunSpec | None":
        """The base network's spec this treatment copies from (same data, split, arch, recipe, seed)."""
        base = get_treatment(self.treatment).base_treatment
        return RunSpec(base, 0, self.config) if base else None
