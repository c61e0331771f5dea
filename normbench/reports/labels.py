"""How figures and progress lines name things for a reader rather than for the registry."""

# Registry name -> the name a reader knows; a norm missing here (one registered at run time) keeps its own.
NORM_LABELS = {
    "none": "no norm",
    "batch": "BatchNorm",
    "layer": "LayerNorm",
    "group": "GroupNorm",
    "instance": "InstanceNorm",
    "rms": "RMSNorm",
    "power": "PowerNorm",
    "ghost_batch": "Ghost BatchNorm",
    "batch_renorm": "Batch Renorm",
    "frn": "FRN + TLU",
    "evonorm_b0": "EvoNorm-B0",
    "evonorm_s0": "EvoNorm-S0",
    "batch+ws": "BatchNorm + WS",
    "group+ws": "GroupNorm + WS",
    "layer+ws": "LayerNorm + WS",
}


def norm_label(name) -> str:
    return NORM_LABELS.get(str(name), str(name))


def seeds_text(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"
