"""normbench: compare normalization schemes with vectorized JAX/Flax sweeps.

From Python: `normbench.run(config, **overrides)` trains a study and returns its results directory,
`normbench.load(results_dir)` reads its table as a pandas DataFrame, `normbench.register_norm(spec)` adds a norm,
`normbench.scorecard(norms)` puts norms through the scorecard's battery (`normbench/api.py`).
"""

from normbench.api import load, register_norm, run, scorecard
from normbench.runtime.xla_flags import set_defaults
from normbench.version import __version__

__all__ = ["__version__", "load", "register_norm", "run", "scorecard"]

# Here, because XLA reads its flags once, when the first computation starts its backend: every way into
# normbench (the CLI, tests, a notebook) passes through this file before that.
set_defaults()
