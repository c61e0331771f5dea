"""The small-batch study on CIFAR-10 with a ResNet-20, for a GPU (the GN paper's Figure 1, one step closer).

    normbench run configs/small_batch_cifar10.py   # writes runs/small_batch_cifar10/

Needs `tfds:cifar10` prepared in the TFDS data dir (or a network to download it). ResNet-20 (16-32-64
channels, GroupNorm with 8 groups), 50,000 training and 10,000 test images, SGD with momentum 0.9 at
learning rate 0.1 x batch / 128, 30 epochs, He init, 5 seeds; `sgd` protocol at batches 2 ... 128 and the
`ghost` protocol at SGD batch 128. Cost: 20 cells of 5 vmapped runs each; on one modern GPU about an hour
(batch 2 dominates: 25,000 steps an epoch). Too slow for a CPU.

The paper's result, which this config has not been run to check (no GPU here): BN's test error rises steeply below
batch 8 while GN and LN stay flat, GN below LN. summary.md's headline comparisons will say what the runs show.
"""

from normbench.config import Config, DataConfig, ModelConfig, NormConfig, ReportConfig, SweepConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="small_batch_cifar10",
        data=DataConfig(source="tfds:cifar10"),
        model=ModelConfig(channels=(16, 32, 64), init="he"),
        norm=NormConfig(momentum=0.9, num_groups=8),
        train=TrainConfig(epochs=30, momentum=0.9, lr_reference_batch=128, precise_bn_examples=10_000),
        sweep=SweepConfig(
            models=("resnet20",),
            norms=("batch", "layer", "group"),
            protocols=("sgd", "ghost"),
            batch_sizes=(2, 4, 8, 16, 32, 64, 128),
            init_scales=(1.0,),
            seeds=(0, 1, 2, 3, 4),
            learning_rates=(0.1,),
        ),
        report=ReportConfig(
            claims=(
                "test_acc, protocol=sgd: norm=batch batch_size=128 - norm=batch batch_size=2",
                "test_acc, protocol=sgd: norm=group batch_size=128 - norm=group batch_size=2",
                "test_acc, protocol=sgd: norm=group batch_size=2 - norm=batch batch_size=2",
            ),
        ),
        figures=("error_vs_batch", "bn_eval_modes"),
    )
