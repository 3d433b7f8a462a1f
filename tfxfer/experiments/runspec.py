"""RunSpec: dataset + split + arch + treatment + n + recipe + seed. Its stable hash is the run id."""
from __future__ import annotations

import dataclasses
import hashlib
import json

from tfxfer.config import Config
from tfxfer.errors import UserError
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
        t = get_treatment(self.treatment)
        object.__setattr__(self, "n", check_n(t, self.n))
        variant = self.config.arch.variant
        if variant is not None and not t.is_base:
            raise UserError(f"treatment {self.treatment} (n={self.n}) is not allowed with arch variant {variant!r}: "
                            "layer n is undefined for variants, which lack or resize layers; they train from "
                            "scratch only (baseA, baseB)")

    @property
    def run_id(self) -> str:
        cfg = self.config.to_dict()
        if cfg["arch"]["variant"] is None:
            # Added after runs existed: left out when unset, so their ids (and finished runs) stay valid.
            del cfg["arch"]["variant"]
        ident = {"treatment": self.treatment, "n": self.n, **{k: cfg[k] for k in _IDENTITY}}
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.treatment}{self.n or ''}-{digest}"

    @property
    def base(self) -> "RunSpec | None":
        """The base network's spec this treatment copies from (same data, split, arch, recipe, seed)."""
        base = get_treatment(self.treatment).base_treatment
        return RunSpec(base, 0, self.config) if base else None
