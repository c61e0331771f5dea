"""A program's matrix-multiply and convolution FLOPs, counted from its jaxpr with every loop's trip count.

XLA's `cost_analysis()` counts a loop body once, and our programs are loops (epochs and steps are `lax.scan`s),
so it undercounts them by the number of steps. Elementwise work is left out: next to the matrix products it is
small, and it is not what a matmul peak measures.
"""

from __future__ import annotations

import math
import re

import jax
from jax.extend import core


def matmul_flops(fn, *args, branch=max) -> int:
    """FLOPs (2 per multiply-add) of the dot products and convolutions `fn(*args)` performs. Which branch of a
    `lax.cond` runs is not known before it runs: `branch` picks among their counts (`max`: an upper bound, `min`:
    a lower one)."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr, branch)


def jaxpr_flops(jaxpr, branch=max, scope: str | None = None) -> int:
    """`matmul_flops` of a jaxpr already traced. With `scope`, only the operations traced inside
    `jax.named_scope(scope)` count (the training step's, say, apart from the evaluations around it)."""
    return _count(jaxpr, branch, scope)


def _count(jaxpr, branch, scope) -> int:
    return sum(_eqn_count(eqn, branch, scope) for eqn in jaxpr.eqns)


def dot_equations(jaxpr, scope: str | None) -> list:
    """The dot_general equations traced inside `jax.named_scope(scope)` (None: all), each once: a loop's body is
    listed once, and every branch of a `lax.cond`."""
    found = []
    for eqn in jaxpr.eqns:
        # Inside the scope, so is all that a loop or branch here holds, whose names start afresh.
        inner = None if _in_scope(eqn, scope) else scope
        if eqn.primitive.name == "dot_general" and inner is None:
            found.append(eqn)
        branches = eqn.params["branches"] if eqn.primitive.name == "cond" else ()
        for sub in (*_sub_jaxprs(eqn.params), *(b.jaxpr for b in branches)):
            found += dot_equations(sub, inner)
    return found


def _in_scope(eqn, scope: str | None) -> bool:
    return scope is not None and bool(re.search(rf"\b{re.escape(scope)}\b", str(eqn.source_info.name_stack)))


def _eqn_count(eqn, branch, scope) -> int:
    if _in_scope(eqn, scope):
        scope = None  # inside the scope, and so is all that a loop or branch here holds, whose names start afresh
    name = eqn.primitive.name
    if name in ("dot_general", "conv_general_dilated"):
        if scope is not None:
            return 0
        return _dot(eqn) if name == "dot_general" else _conv(eqn)
    if name == "scan":
        return eqn.params["length"] * _count(eqn.params["jaxpr"].jaxpr, branch, scope)
    if name == "cond":
        return branch(_count(b.jaxpr, branch, scope) for b in eqn.params["branches"])
    # calls (pjit, custom_jvp/vjp, remat, while bodies counted once): whatever jaxprs they hold
    return sum(_count(sub, branch, scope) for sub in _sub_jaxprs(eqn.params))


def _sub_jaxprs(params):
    for value in params.values():
        if isinstance(value, core.ClosedJaxpr):
            yield value.jaxpr
        elif isinstance(value, core.Jaxpr):
            yield value


def _dot(eqn) -> int:
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
    free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
    return 2 * math.prod(lhs) * math.prod(free)


def _conv(eqn) -> int:
    rhs = eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
    return 2 * math.prod(out) * math.prod(rhs) // out_features
