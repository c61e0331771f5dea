"""The small-batch study: BatchNorm's accuracy against its batch size, next to LayerNorm and GroupNorm
(the Group Normalization paper's Figure 1, Wu & He 2018, at a scale a 2-core CPU runs in minutes).

    normbench run configs/small_batch.py   # writes runs/small_batch/

Models: the textbook MLP (3 hidden layers of 100) and a 3-block CNN (8-16-32 channels); GroupNorm with 4
groups. Data: the first 1,000 training images of the embedded mnist5k; tests on its 1,000 test images.
Training: SGD with momentum 0.9 at learning rate 0.1 x batch / 256 (the linear scaling rule of Goyal et al.,
2017), 8 epochs, He init, 5 seeds. (The GN paper's 0.1 x batch / 32 made the batch-128 runs of every norm
unstable at this scale: LN and GN in the MLP reached 47 +- 34% and 45 +- 40% test accuracy.)
- `sgd` protocol: the SGD batch is BN's batch, 2, 4, ..., 128 (one compiled program per batch size);
- `ghost` protocol: SGD batch 128, BN statistics over ghost groups of 2 ... 128 examples (vmapped).
BN is evaluated three ways: running averages (momentum 0.9), the test batch's own statistics, and PreciseBN.
Cost on a 2-core CPU: about 8 minutes, 44 compiled programs (a rerun with the compilation cache warm skips
compiling).

Expected (results/small_batch/summary.md, error_vs_batch.png, bn_eval_modes.png): BN's test accuracy with
running-average evaluation drops steeply at batches of 2-4 while LN and GN stay flat; evaluating BN with
PreciseBN statistics recovers part of the drop.
"""

from normbench.config import Config, DataConfig, ModelConfig, NormConfig, SweepConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="small_batch",
        data=DataConfig(source="mnist5k", n_train=1000),
        model=ModelConfig(hidden=(100, 100, 100), channels=(8, 16, 32), init="he"),
        norm=NormConfig(momentum=0.9, num_groups=4),
        train=TrainConfig(epochs=8, momentum=0.9, lr_reference_batch=256, precise_bn_examples=1000),
        sweep=SweepConfig(
            models=("mlp", "cnn"),
            norms=("batch", "layer", "group"),
            protocols=("sgd", "ghost"),
            batch_sizes=(2, 4, 8, 16, 32, 64, 128),
            init_scales=(1.0,),
            seeds=(0, 1, 2, 3, 4),
            learning_rates=(0.1,),
        ),
        figures=("error_vs_batch", "bn_eval_modes"),
    )
