"""FLOP counting from the jaxpr: loops count by their trip counts, and a training step of the MLP counts what
the textbook's arithmetic says it does."""

import jax
import jax.numpy as jnp
import pytest

from normbench.bench import format_table, run_bench
from normbench.errors import UserError
from normbench.flops import matmul_flops


def test_a_scan_counts_its_body_once_per_step():
    def loop(x, w):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=10)[0]

    x, w = jnp.ones((4, 5)), jnp.ones((5, 5))
    assert matmul_flops(loop, x, w) == 10 * 2 * 4 * 5 * 5
    # Backward: each step's product is transposed twice (input and weight gradients).
    assert matmul_flops(jax.grad(lambda x, w: loop(x, w).sum(), argnums=1), x, w) == 30 * 2 * 4 * 5 * 5


def test_an_mlp_training_step_under_vmap():
    widths = [784, 100, 100, 10]
    ws = [jnp.ones((8, a, b)) for a, b in zip(widths, widths[1:])]

    def loss(ws, x):
        for w in ws[:-1]:
            x = jax.nn.relu(x @ w)
        return (x @ ws[-1]).sum()

    step = jax.vmap(jax.grad(loss), in_axes=(0, None))  # 8 models, one shared batch of 32
    forward = sum(2 * 32 * a * b for a, b in zip(widths, widths[1:]))
    input_grads = sum(2 * 32 * a * b for a, b in zip(widths[1:], widths[2:]))  # none for the first layer's input
    assert matmul_flops(step, ws, jnp.ones((32, 784))) == 8 * (2 * forward + input_grads)


def test_convolutions_count_multiply_adds_per_output():
    def conv(x, k):
        return jax.lax.conv_general_dilated(x, k, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    x, k = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 16))
    assert matmul_flops(conv, x, k) == 2 * (2 * 4 * 4 * 16) * (3 * 3 * 3)


def test_bench_peak_case_writes_its_table(tmp_path):
    report = run_bench(tmp_path, ("peak",), log=lambda line: None)
    assert report["peak_gflops"] > 0
    assert (tmp_path / "peak.csv").read_text().startswith("peak_gflops\n")
    with pytest.raises(UserError, match="unknown bench case 'fast'; valid cases: peak, study"):
        run_bench(tmp_path, ("fast",))
    assert format_table([{"a": 1, "bb": 22}]) == "a  bb\n1  22"


def test_cond_branches_are_counted_as_asked():
    def maybe(p, x):
        return jax.lax.cond(p, lambda: x @ x, lambda: x)

    args = (True, jnp.ones((4, 4)))
    assert matmul_flops(maybe, *args) == 2 * 4**3 and matmul_flops(maybe, *args, branch=min) == 0
