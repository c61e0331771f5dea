"""Loss-landscape probes along the gradient (`train.landscape_steps`), the measurements of Santurkar et al.'s
Figure 4 ("How Does Batch Normalization Help Optimization?", 2018).

At parameters θ with the minibatch gradient g = ∇L(θ), each step size η of the probe moves to θ - η g and
evaluates the same minibatch's loss and gradient there (BatchNorm on that batch's statistics, nothing
updated). Of those points, a run records per epoch:

- `loss_min`, `loss_range`: the lowest L(θ - η g) and its spread, max - min (the paper's "loss landscape", the
  variation of the loss along the step; a smooth landscape varies little);
- `grad_change_min`, `grad_change_max`: the smallest and largest ‖∇L(θ - η g) - g‖ (the paper's "gradient
  predictiveness": how far the gradient one would step on is from the gradient where one lands);
- `beta`: max over η of ‖∇L(θ - η g) - g‖ / ‖η g‖ (the paper's "effective β-smoothness", the gradient's
  Lipschitz constant along the step).

The math is `probe`, a pure function of any loss over any parameter pytree; `normbench.core.train` calls it at
the first step of each epoch and writes the values as metrics.csv columns (`COLUMNS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class Landscape(NamedTuple):
    """One probe's summary: scalars (with leading axes when vmapped or stacked over epochs)."""

    loss_min: jax.Array
    loss_range: jax.Array
    grad_change_min: jax.Array
    grad_change_max: jax.Array
    beta: jax.Array


# metrics.csv's columns for the fields of `Landscape`, present only when train.landscape_steps is set.
COLUMNS = tuple(f"landscape_{name}" for name in Landscape._fields)


def probe(value_and_grad: Callable, params, step_sizes: jax.Array) -> Landscape:
    """`Landscape` of the loss whose `value_and_grad(params) -> (loss, grads)` is given, along its gradient at
    `params`, at each of `step_sizes` (a 1-d array of η > 0, e.g. multiples of the learning rate)."""
    _, grad = value_and_grad(params)

    def at(eta):
        moved = jax.tree.map(lambda p, g: p - eta * g, params, grad)
        loss, moved_grad = value_and_grad(moved)
        return loss, optax.tree.norm(jax.tree.map(jnp.subtract, moved_grad, grad))

    # One step size after another: a vmap would hold every moved copy of the parameters at once.
    losses, changes = jax.lax.map(at, step_sizes)
    distances = step_sizes * optax.tree.norm(grad)
    return Landscape(
        loss_min=losses.min(),
        loss_range=losses.max() - losses.min(),
        grad_change_min=changes.min(),
        grad_change_max=changes.max(),
        beta=(changes / distances).max(),
    )


def unmeasured(dtype) -> Landscape:
    """NaN in every field: the epochs of a run that probes nothing, so every run's metrics have one structure."""
    return Landscape(*(jnp.full((), jnp.nan, dtype) for _ in Landscape._fields))
