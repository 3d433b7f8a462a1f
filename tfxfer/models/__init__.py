"""Architectures: `get_arch(name)`, `list_archs()`, `build_model(spec, num_classes, ...)`."""
from tfxfer.models.registry import (
    LAYER_NAMES,
    VARIANTS,
    ArchSpec,
    build_model,
    get_arch,
    list_archs,
    register_arch,
)

__all__ = ["LAYER_NAMES", "VARIANTS", "ArchSpec", "build_model", "get_arch", "list_archs", "register_arch"]
