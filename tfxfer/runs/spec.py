"""RunSpec: dataset + split + arch + treatment + n + recipe + seed. Its stable hash is the run id."""
from __future__ import annotations

import dataclasses
import hashlib
import json

from tfxfer.config import BaseModelConfig, Config
from tfxfer.errors import UserError
from tfxfer.treatments import check_cut, check_n, get_treatment

# Sections that change what a run computes. `out` is where it goes and `training` how it is
# spread over devices, neither of which makes it a different network.
_IDENTITY = ("dataset", "split", "arch", "base_model", "recipe", "seed")
# Keys added after runs existed, with the value every earlier run had: left out of the hash while
# they have it, so the ids of those runs (and their finished results) stay valid.
_ADDED_LATER = {("arch", "variant"): None, ("recipe", "nesterov"): False, ("recipe", "schedule"): "step",
                ("recipe", "warmup_epochs"): 0.0, ("recipe", "label_smoothing"): 0.0,
                **{("base_model", f.name): f.default if f.default is not dataclasses.MISSING else f.default_factory()
                   for f in dataclasses.fields(BaseModelConfig)}}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    treatment: str
    n: int | None  # normalized: 0 for base nets
    config: Config

    def __post_init__(self):
        t = get_treatment(self.treatment)
        if self.config.base_model.path is not None:  # n indexes the model file's cuts
            object.__setattr__(self, "n", check_cut(self.treatment, self.n, self.config.base_model))
            return
        object.__setattr__(self, "n", check_n(t, self.n))
        variant = self.config.arch.variant
        if variant is not None and not t.is_base:
            raise UserError(f"treatment {self.treatment} (n={self.n}) is not allowed with arch variant {variant!r}: "
                            "layer n is undefined for variants, which lack or resize layers; they train from "
                            "scratch only (baseA, baseB)")

    @property
    def run_id(self) -> str:
        cfg = self.config.to_dict()
        if cfg["base_model"]["sha256"] is not None:
            # A model file is known by its content: moving it keeps its runs' ids.
            del cfg["base_model"]["path"]
        for (section, key), old in _ADDED_LATER.items():
            if key in cfg[section] and cfg[section][key] == old:
                del cfg[section][key]
        # A section made of keys added later, all at their old values, is left out whole.
        ident = {"treatment": self.treatment, "n": self.n, **{k: cfg[k] for k in _IDENTITY if cfg[k] != {}}}
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.treatment}{self.n or ''}-{digest}"

    @property
    def trained_config(self) -> Config:
        """The config this run trains with: the experiment's, with the epochs (and any step schedule's
        step) stretched for a treatment trained longer, so its schedule has the same shape."""
        factor = get_treatment(self.treatment).epochs_factor
        if factor == 1:
            return self.config
        r = self.config.recipe
        recipe = dataclasses.replace(r, epochs=r.epochs * factor,
                                     lr_step_epochs=r.lr_step_epochs and r.lr_step_epochs * factor)
        return dataclasses.replace(self.config, recipe=recipe)

    @classmethod
    def of_record(cls, record: dict) -> "RunSpec":
        """The spec a result record was trained from. A record holds the config it trained with, so
        a run trained longer holds stretched epochs: undo the stretch to get the experiment's."""
        config = Config.from_dict(record["config"])
        factor = get_treatment(record["treatment"]).epochs_factor
        if factor > 1:
            r = config.recipe
            recipe = dataclasses.replace(r, epochs=r.epochs // factor,
                                         lr_step_epochs=r.lr_step_epochs and r.lr_step_epochs // factor)
            config = dataclasses.replace(config, recipe=recipe)
        return cls(record["treatment"], record["n"], config)

    @property
    def base(self) -> "RunSpec | None":
        """The base network's spec this treatment copies from (same data, split, arch, recipe, seed);
        None for a base model file, which is no run."""
        if self.config.base_model.path is not None:
            return None
        base = get_treatment(self.treatment).base_treatment
        return RunSpec(base, 0, self.config) if base else None
