"""Norms in a Transformer: LayerNorm, RMSNorm, BatchNorm and PowerNorm in a small ViT, pre- and post-norm, with
and without learning-rate warmup (Shen et al., 2020, PowerNorm; Xiong et al., 2020, On Layer Normalization in
the Transformer Architecture), at a scale a 2-core CPU runs in minutes.

    normbench run configs/transformer_norms.py   # writes runs/transformer_norms/

Model: a ViT on 7x7 patches of MNIST digits (16 tokens), width 32, 2 blocks of 4-head attention and an MLP of
width 64 (GELU), mean-pooled; Xavier init. BN's statistics are over batch x tokens (100 x 16 values), PowerNorm's
running quadratic mean likewise; LN and RMSNorm normalize each token over its 32 channels. Norm placement
`model.norm_placement` (pre, post) is a static axis: one compiled program per norm and placement, 8 in all.
Data: 2,000 training images of the embedded mnist5k, the next 1,000 held out for validation, its 1,000 test
images. Training: Adam, batch 100, 6 epochs (120 steps), a cosine decay to 0, with a linear warmup over the first
`train.warmup_fraction` of the steps, 0 (none) or 0.2, and learning rates 3e-3 and 1e-2 (both vmapped; a first
run at 1e-3 and 3e-3 chose 3e-3, the grid's edge, everywhere), the rate
tuned per norm, placement and warmup on the validation set (`report.tune`), 5 seeds.

The papers' claims and the contrasts summary.md states for them (paired by seed, 95% intervals):
- LN trains Transformers better than BN, whose batch statistics fluctuate (Shen et al.): layer - batch, and
  PowerNorm, which keeps batch statistics out of the forward pass, recovers it: power - batch.
- Post-LN needs warmup, pre-LN does not (Xiong et al.): the gain of warmup for post-LN, for pre-LN, and their
  difference.

How it differs from the papers: MNIST digits and a 2-block ViT of width 32, not translation or language modelling
with 6-12 blocks of width 512; 120 steps, not 100k; the warmup's length a fraction of that short run; no dropout.
Where the small scale shows no effect, summary.md says "not significant".

Expected: summary.md's headline comparisons and the tuned rates; about 7 minutes on 2 shared CPU cores.
"""

from normbench.config import Config, DataConfig, ModelConfig, NormConfig, ReportConfig, SweepConfig, TrainConfig

WARM, COLD = "train.warmup_fraction=0.2", "train.warmup_fraction=0.0"


def get_config() -> Config:
    return Config(
        name="transformer_norms",
        data=DataConfig(source="mnist5k", n_train=2000, n_val=1000),
        model=ModelConfig(init="xavier", activation="gelu", patch_size=7, width=32, depth=2, heads=4, mlp_ratio=2),
        # BN's and PowerNorm's running averages, as the small-batch study's; epsilon as PyTorch's.
        norm=NormConfig(momentum=0.9, epsilon=1e-5),
        train=TrainConfig(
            epochs=6, optimizer="adam", schedule="cosine", warmup_fraction=0.2, precise_bn_examples=1000, test_every=6
        ),
        sweep=SweepConfig(
            models=("vit",),
            norms=("layer", "rms", "batch", "power"),
            batch_sizes=(100,),
            seeds=(0, 1, 2, 3, 4),
            learning_rates=(3e-3, 1e-2),
            fields={"model.norm_placement": ("pre", "post"), "train.warmup_fraction": (0.0, 0.2)},
        ),
        report=ReportConfig(
            tune=("learning_rate",),
            claims=(
                # LN vs BN in a Transformer (Shen et al.), with warmup, in each placement
                f"test_acc, {WARM}, model.norm_placement=pre: norm=layer - norm=batch",
                f"test_acc, {WARM}, model.norm_placement=post: norm=layer - norm=batch",
                f"test_acc, {WARM}, model.norm_placement=pre: norm=power - norm=batch",
                f"test_acc, {WARM}, model.norm_placement=pre: norm=layer - norm=power",
                f"test_acc, {WARM}, model.norm_placement=pre: norm=layer - norm=rms",
                # post-LN needs warmup, pre-LN does not (Xiong et al.)
                f"test_acc, norm=layer, model.norm_placement=post: {WARM} - {COLD}",
                f"test_acc, norm=layer, model.norm_placement=pre: {WARM} - {COLD}",
                f"test_acc, norm=layer: model.norm_placement=post {WARM} - model.norm_placement=post {COLD}"
                f" - model.norm_placement=pre {WARM} + model.norm_placement=pre {COLD}",
                f"test_acc, norm=layer, {COLD}: model.norm_placement=pre - model.norm_placement=post",
            ),
        ),
    )
