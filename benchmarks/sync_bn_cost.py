"""What does synchronizing BatchNorm cost per training step? Per-device BN against SyncBN, data parallel.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/sync_bn_cost.py \
        [--devices 8] [--batch-sizes 2,4,8] [--steps 200] [--repeats 5]

Times the training steps alone of the sync_bn study's model (the textbook MLP, 3 BatchNorm layers of 100,
SGD with momentum, one run), `--steps` steps in one compiled `lax.scan` inside the same shard_map as
`normbench run` (`normbench.runtime.parallel.BatchSplit`, `normbench.core.train.train_step`), best of `--repeats`, under
each protocol: `per_device` (each device's BatchNorm statistics are its own; the only all-reduce averages the
gradients and the loss) and `sync` (SyncBN: BatchNorm's mean and variance averaged over the devices, forward
and backward). It also counts the all-reduces of one step in the optimized program, which do not depend on
the machine. Prints a Markdown table.

On 8 simulated CPU devices the devices are threads of one process sharing the cores, so an all-reduce costs a
rendezvous of threads and a copy, not a trip over NVLink or the network: the time measures the
synchronization's latency on this machine, and the count is what a GPU cluster would pay for.
"""

from __future__ import annotations

import argparse
import math
import re
import time

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from normbench.config import Config, DataConfig, ModelConfig, NormConfig, TrainConfig
from normbench.core.train import OPTIMIZERS, TrainState, train_step
from normbench.data import load
from normbench.models import build_model
from normbench.norms import NORMS
from normbench.protocols import PROTOCOLS
from normbench.runtime.parallel import data_mesh


def bench_config(devices: int) -> Config:
    """The sync_bn study's model, norm and optimizer."""
    return Config(
        data=DataConfig(source="mnist5k", n_train=1000),
        model=ModelConfig(hidden=(100, 100, 100), init="he"),
        norm=NormConfig(momentum=0.9),
        train=TrainConfig(momentum=0.9, data_parallel=devices),
    )


def steps_program(config: Config, protocol: str, batch: int, num_classes: int):
    """steps(x, y, indices [steps, devices x batch]) -> losses: the training steps of one run, data parallel."""
    protocol = PROTOCOLS[protocol]
    split = protocol.split(config)
    norm = NORMS["batch"].make(config.norm, protocol.batch_stats(batch))
    model = build_model("mlp", config.model, norm, num_classes)
    tx = OPTIMIZERS[config.train.optimizer](config.train, 0.01)

    def steps(x, y, indices):
        variables = model.init(jax.random.PRNGKey(0), x[:batch], train=False)
        params = variables["params"]
        state = TrainState(params, split.per_device(variables["batch_stats"]), tx.init(params))

        def step(state, idx):
            idx = split.local(idx)
            return train_step(model, tx, state, x[idx], y[idx], split.axis)

        return jax.lax.scan(step, state, indices)[1]

    mesh = data_mesh(config.train.data_parallel)
    return jax.jit(jax.shard_map(steps, mesh=mesh, in_specs=P(), out_specs=P()))


def measure(config: Config, batch_sizes, n_steps: int, repeats: int) -> list[dict]:
    dataset = load(config.data)
    x, y = jax.device_put(dataset.train_x), jax.device_put(dataset.train_y)
    devices = config.train.data_parallel
    rows = []
    for batch in batch_sizes:
        indices = np.random.default_rng(0).integers(0, len(x), (n_steps, devices * batch)).astype(np.int32)
        row = {"batch": batch, "sgd_batch": devices * batch}
        for protocol in ("per_device", "sync"):
            compiled = steps_program(config, protocol, batch, dataset.num_classes).lower(x, y, indices).compile()
            row[f"{protocol}_all_reduces"], row[f"{protocol}_kib"] = all_reduces(compiled.as_text())
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                jax.block_until_ready(compiled(x, y, indices))
                best = min(best, time.perf_counter() - start)
            row[f"{protocol}_ms"] = 1000 * best / n_steps
        rows.append(row)
    return rows


def all_reduces(hlo: str) -> tuple[int, float]:
    """The all-reduce instructions of an optimized program and the KiB they reduce (float32), once per step:
    the steps are one `while` loop, whose body the text holds once."""
    shapes = re.findall(r"^\s*(?:ROOT )?%\S+ = (.*?) all-reduce(?:-start)?\(", hlo, re.M)
    elements = sum(
        math.prod(int(d) for d in dims.split(",") if d) for s in shapes for dims in re.findall(r"f32\[([\d,]*)\]", s)
    )
    return len(shapes), 4 * elements / 1024


def table(rows: list[dict], devices: int) -> str:
    lines = [
        f"| examples per device | SGD batch ({devices} devices) | per-device BN, ms/step | SyncBN, ms/step | "
        "sync cost, ms/step | all-reduces (KiB) per step, per-device BN | all-reduces (KiB) per step, SyncBN |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cost = r["sync_ms"] - r["per_device_ms"]
        lines.append(
            f"| {r['batch']} | {r['sgd_batch']} | {r['per_device_ms']:.2f} | {r['sync_ms']:.2f} | "
            f"{cost:+.2f} ({100 * cost / r['per_device_ms']:+.0f}%) | "
            f"{r['per_device_all_reduces']} ({r['per_device_kib']:.0f}) | "
            f"{r['sync_all_reduces']} ({r['sync_kib']:.0f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--batch-sizes", default="2,4,8")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    config = bench_config(args.devices)
    rows = measure(config, [int(b) for b in args.batch_sizes.split(",")], args.steps, args.repeats)
    device = jax.devices()[0]
    print(f"Training steps of one run, best of {args.repeats} x {args.steps} steps, on {args.devices} devices ")
    print(f"({device.platform}: {device.device_kind}, {jax.device_count()} seen; jax {jax.__version__}):\n")
    print(table(rows, args.devices))


if __name__ == "__main__":
    main()
