"""Per-device BatchNorm against SyncBN and GroupNorm in data-parallel training over 8 devices (the GN paper's
"images per GPU" setting, Wu & He 2018, at a scale a 2-core CPU runs in minutes).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 normbench run configs/sync_bn.py   # writes runs/sync_bn/

(On a machine with 8 accelerators, drop XLA_FLAGS.) Each SGD batch is split over 8 devices, 2, 4 or 8
examples on each (SGD batches of 16, 32, 64), and the gradients are averaged over the devices. `per_device`:
each device's norms see only its own examples, BatchNorm included (no communication); `sync`: BatchNorm's
mean and variance are averaged over the 8 devices (SyncBN). GroupNorm with 4 groups needs no batch, so it has
only a per_device cell. Model and training as the small-batch study: the textbook MLP (3 hidden layers of
100), He init, SGD with momentum 0.9 at 0.1 x SGD batch / 256, 8 epochs on the first 1,000 images of the
embedded mnist5k, 5 seeds. Cost on a 2-core CPU with 8 simulated devices: about 2 minutes, 9 compiled programs.
`python benchmarks/sync_bn_cost.py` measures what the synchronization costs per step.

Expected: results/sync_bn/summary.md's headline comparisons, each a paired difference over the 5 seeds with its
95% interval (quoted in the README): SyncBN against per-device BN, and GN against per-device BN, at 2 examples
per device; and SyncBN's accuracy at an SGD batch of 16 against 64.
"""

from normbench.config import Config, DataConfig, ModelConfig, NormConfig, ReportConfig, SweepConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="sync_bn",
        data=DataConfig(source="mnist5k", n_train=1000, n_val=1000),
        model=ModelConfig(hidden=(100, 100, 100), init="he"),
        norm=NormConfig(momentum=0.9, num_groups=4),
        train=TrainConfig(epochs=8, momentum=0.9, lr_reference_batch=256, precise_bn_examples=1000, data_parallel=8),
        sweep=SweepConfig(
            models=("mlp",),
            norms=("batch", "group"),
            protocols=("per_device", "sync"),
            batch_sizes=(2, 4, 8),
            init_scales=(1.0,),
            seeds=(0, 1, 2, 3, 4),
            learning_rates=(0.05, 0.1, 0.2),
        ),
        report=ReportConfig(
            tune=("learning_rate",),
            claims=tuple(
                f"test_acc, batch_size={b}: {term} - norm=batch protocol=per_device"
                for b in (2, 4, 8)
                for term in ("norm=batch protocol=sync", "norm=group protocol=per_device")
            )
            + ("test_acc, norm=batch, protocol=sync: batch_size=2 - batch_size=8",),
        ),
        figures=("sync_bn",),
    )
