"""The README's code works as written."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from normbench.config import NormConfig

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_norm_example_runs_and_is_rmsnorm():
    (code,) = re.findall(r"```python\n# normbench/norms/rms.py\n(.*?)```", README.read_text(), re.S)
    namespace = {}
    exec(compile(code, "README rms.py", "exec"), namespace)
    spec = namespace["SPEC"]
    module = spec.make(NormConfig(epsilon=1e-6))(True)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 5)) * 3 + 1
    variables = module.init(jax.random.PRNGKey(1), x)
    y = module.apply(variables, x, mask=jnp.ones((4, 1, 1, 1), bool))
    rms = np.sqrt(np.mean(np.asarray(x) ** 2, axis=(1, 2, 3), keepdims=True) + 1e-6)
    np.testing.assert_allclose(y, np.asarray(x) / rms, rtol=1e-5, atol=1e-6)
    assert not spec.batch_dependent and not spec.running_stats
