"""normbench: compare normalization schemes with vectorized JAX/Flax sweeps."""

from normbench.runtime.xla_flags import set_defaults

__version__ = "0.1.0"

# Here, because XLA reads its flags once, when the first computation starts its backend: every way into
# normbench (the CLI, tests, a notebook) passes through this file before that.
set_defaults()
