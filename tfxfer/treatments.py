"""The transfer treatments of Yosinski et al. (2014), Figure 1.

A treatment names which base network the first n layers come from (or none), which task the new
network is trained on, and whether the copied layers are frozen or fine-tuned:

    baseA, baseB      trained from scratch on A or B (n = 0)
    BnB, AnA          selffer: layers 1..n from the same task's base, frozen
    AnB, BnA          transfer: layers 1..n from the other task's base, frozen
    XnY+              the same with the copied layers fine-tuned (all layers learn)
    random            layers 1..n of a seeded random network (the same for every n), frozen; trained on B
    baseA-long, baseB-long
                      the equal-training control: the base net trained from scratch for as many
                      epochs as a fine-tuned treatment's network saw in all (its base's and its own)
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from tfxfer.errors import UserError
from tfxfer.models import LAYER_NAMES, ArchSpec, build_model
from tfxfer.models.registry import layer_seed

if TYPE_CHECKING:
    import keras

N_MAX = len(LAYER_NAMES) - 1  # n = 8 would copy the classifier itself: B8B is baseB (paper, footnote 2)
# The treatments over a base model file (tfxfer.models.external), which is task A's network; n is
# the index of a cut in base_model.cuts. baseB is the file's layers up to its deepest cut,
# re-initialized and trained from scratch on B (n = 0).
FILE_TREATMENTS = ("baseB", "AnB", "AnB+", "random")


@dataclasses.dataclass(frozen=True)
class Treatment:
    name: str
    source: str | None  # the task whose base net layers 1..n are copied from; None: no copy
    target: str  # the task trained on and tested on
    fine_tune: bool  # copied layers learn (True) or stay frozen (False)
    epochs_factor: int = 1  # trained for this many times the recipe's epochs

    @property
    def is_base(self) -> bool:
        """Trained from scratch, with no n: the base nets and their equal-training controls."""
        return self.source is None and self.name != "random"

    @property
    def control(self) -> str | None:
        """The equal-training control of a fine-tuned copy (AnB+ → baseB-long): the target's base
        net trained as long as the copy's layers were in all. Frozen copies and base nets have none."""
        return f"base{self.target}-long" if self.source and self.fine_tune else None

    @property
    def base_treatment(self) -> str | None:
        """The base network this treatment copies from, e.g. 'baseA' for AnB."""
        return f"base{self.source}" if self.source else None


def _all() -> dict[str, Treatment]:
    out = {f"base{t}": Treatment(f"base{t}", None, t, True) for t in "AB"}
    out.update({f"base{t}-long": Treatment(f"base{t}-long", None, t, True, epochs_factor=2) for t in "AB"})
    for src in "AB":
        for tgt in "AB":
            out[f"{src}n{tgt}"] = Treatment(f"{src}n{tgt}", src, tgt, False)
            out[f"{src}n{tgt}+"] = Treatment(f"{src}n{tgt}+", src, tgt, True)
    out["random"] = Treatment("random", None, "B", False)
    return out


TREATMENTS: dict[str, Treatment] = _all()


def get_treatment(name: str) -> Treatment:
    if name not in TREATMENTS:
        raise UserError(f"treatment {name!r} is unknown; allowed: {', '.join(TREATMENTS)}")
    return TREATMENTS[name]


def control_of(name: str) -> str:
    """The equal-training control's treatment name for `name`, or a UserError naming those that have one."""
    control = get_treatment(name).control
    if control is None:
        having = ", ".join(t.name for t in TREATMENTS.values() if t.control)
        raise UserError(f"treatment {name!r} has no equal-training control (only fine-tuned copies do: {having})")
    return control


def check_n(treatment: Treatment, n: int | None) -> int:
    """n as the treatment takes it: 0 (or unset) for base nets, 1..7 otherwise."""
    if treatment.is_base:
        if n not in (0, None):
            raise UserError(f"n={n} makes no sense for {treatment.name}; base networks take no n")
        return 0
    if not (isinstance(n, int) and 1 <= n <= N_MAX):
        raise UserError(f"n={n!r} is out of range for {treatment.name}; allowed: 1..{N_MAX}")
    return n


def frozen_layers(treatment: Treatment, n: int) -> tuple[str, ...]:
    """Names of the layers that do not learn."""
    return () if treatment.fine_tune else LAYER_NAMES[:n]


def build_treatment(name: str, n: int, spec: ArchSpec, num_classes: int, *, base: keras.Model | None = None,
                    seed: int = 0, **model_kwargs) -> keras.Model:
    """The network for treatment `name` at layer n.

    The architecture is rebuilt from `spec` with a fresh initialization from `seed`; layers 1..n
    then take `base`'s weights (for treatments that copy) and `trainable` is set per the treatment.
    """
    t = get_treatment(name)
    n = check_n(t, n)
    if t.source and base is None:
        raise ValueError(f"{name} copies layers 1..{n} from {t.base_treatment}: pass its model as `base`")
    # Each treatment draws its own initialization: were BnB's upper layers re-initialized exactly as
    # baseB's were, it would be biased toward rediscovering baseB's co-adapted features.
    init_seed = seed if t.is_base else layer_seed(seed, f"{name}{n}")
    label = name.replace("+", "_ft").replace("-", "_")
    model = build_model(spec, num_classes, seed=init_seed, name=f"{label}{n or ''}", **model_kwargs)
    if name == "random":
        # Layers 1..n of one seeded random network, the same for every n: the random prefix (and
        # its cached outputs) is shared by all n, as a base net's is by AnB at every n.
        base = build_model(spec, num_classes, seed=layer_seed(seed, "random"), **model_kwargs)
    if t.source or name == "random":
        for layer in LAYER_NAMES[:n]:
            model.get_layer(layer).set_weights(base.get_layer(layer).get_weights())
    for layer in frozen_layers(t, n):
        model.get_layer(layer).trainable = False
    return model


def check_cut(name: str, n: int | None, bm) -> int:
    """n as a treatment over a (resolved) base_model section `bm` takes it: 0 for baseB, else the
    index of its cut, 1..len(bm.cuts)."""
    if name not in FILE_TREATMENTS:
        raise UserError(f"treatment {name} is not allowed with a base model file; "
                        f"allowed: {', '.join(FILE_TREATMENTS)}")
    if not isinstance(bm.cuts, list):
        raise ValueError("resolve the base_model section first (tfxfer.config.resolve_base_model)")
    if get_treatment(name).is_base:
        return check_n(get_treatment(name), n)
    if not (isinstance(n, int) and 1 <= n <= len(bm.cuts)):
        raise UserError(f"n={n!r} is out of range for {name}; allowed: 1..{len(bm.cuts)}, "
                        f"an index into base_model.cuts ({', '.join(bm.cuts)})")
    return n


def build_file_treatment(name: str, n: int, bm, recipe, num_classes: int, *, seed: int = 0,
                         base: keras.Model | None = None) -> keras.Model:
    """The network for treatment `name` at cut n of a base model file (`bm`: the resolved
    base_model section; `recipe`: the recipe section; `base`: the loaded file, default loaded
    here): AnB copies it up to the cut, frozen; AnB+ fine-tuned; random and baseB re-initialize
    those layers (random: frozen, the same random net for every cut; baseB: learning, at the
    deepest cut). Each treatment and cut draws its own head, as build_treatment does."""
    from tfxfer.models import external

    t = get_treatment(name)
    n = check_cut(name, n, bm)
    reinit = name in ("random", "baseB")
    return external.build_network(
        base if base is not None else external.load_base_model(bm), external.cut_of(bm, n), num_classes,
        input_size=bm.input_size, head=bm.head, frozen=not t.fine_tune,
        reinit_seed=layer_seed(seed, name) if reinit else None, seed=layer_seed(seed, f"{name}{n}"), run_seed=seed,
        dropout=recipe.dropout, weight_decay=recipe.weight_decay, precision=recipe.precision,
        name=f"{name.replace('+', '_ft')}{n or ''}")
