"""Where a model shows its layers to `normbench.core.diagnostics`.

`record(module, index, pre_norm, output)` after each normalized layer sows the layer's pre-norm values and its
output (after the activation) into `intermediates`, and passes the output through a Flax perturbation, whose
gradient is the loss's gradient with respect to that output. Both collections exist only when the diagnostics
pass them, so in training every call is a no-op and the programs are unchanged. `init` records nothing: its
variables would otherwise carry intermediates and perturbations shaped by the init batch, which no other batch
size could be applied with.
"""

import flax.linen as nn


def record(module: nn.Module, index: int, pre_norm, output):
    if module.is_initializing():
        return output
    module.sow("intermediates", "pre_norm", pre_norm)
    module.sow("intermediates", "output", output)
    return module.perturb(f"layer{index}", output)
