"""Does BatchNorm smooth the loss landscape? Santurkar et al.'s Figure 4, on the init-scale MLP.

    normbench run configs/landscape.py   # writes runs/landscape/

Santurkar, Tsipras, Ilyas & Madry, "How Does Batch Normalization Help Optimization?" (NeurIPS 2018), Fig. 4:
at each step of training, move from the parameters θ along the minibatch gradient g to θ - η g for several step
sizes η and measure, on that batch, the loss (its variation: "loss landscape"), the change of the gradient
‖∇L(θ - η g) - g‖ ("gradient predictiveness") and the largest change per distance moved ("effective
β-smoothness"). With BatchNorm all three are smaller: the landscape is smoother.

Here: the init-scale study's MLP 784-100x5-10 (Dense -> Norm -> ReLU, He init) on the first 1,000 mnist5k images,
SGD at batch 100 (plain, no momentum), 20 epochs of 10 steps, float32, with BatchNorm and without, at learning rates
0.1 and 0.2 (BN ends at 100% train accuracy at both, the plain net at 99.8-100%), 5 seeds: 20 runs, two compiled
programs. At the first step of every epoch (epoch 1 = at init), η = 0.25, 0.5, 1, 2 and 4 times the learning rate
(`train.landscape_steps`). A first run compiles for 8 of its 27 s, which the program cache then skips.

How it differs from the paper:

| | the paper | here |
|---|---|---|
| model, data | VGG on CIFAR-10 (and a deep linear net) | a 6-layer ReLU MLP on 1,000 MNIST digits |
| training | SGD, learning rate 0.1 (its Fig. 4), thousands of steps | plain SGD at 0.1 and 0.2, 200 steps |
| when probed | along the whole run, every step plotted | the first step of each of the 20 epochs |
| step sizes | up to η = 0.4, 4x its learning rate (its caption caps the distance there) | 0.25x to 4x the rate |
| runs | one per network | 5 seeds; a seed's two networks share their init draw and minibatches |
| statistics | curves | paired differences over seeds with 95% intervals (`report.claims`) |
| compared | at the same step | at the same epoch, and at matched training loss (`normbench.results.matched_loss`) |

Expected (results/landscape/summary.md, `landscape.png`). At epoch 10, BN - none paired over the 5 seeds, with
unadjusted 95% intervals; after Holm's correction over the study's 7 claims only β at rate 0.2 is significant (p =
0.047), the other five are not (p = 0.099): the gradient's change along the step, -9.0 [-15.7, -2.4] at rate 0.1
and -12.2 [-22.1, -2.4] at 0.2, not significant; the effective β, -6.8 [-11.9, -1.6], not significant, and -8.2
[-12.8, -3.6], significant; the loss's variation, -2.6 [-4.8, -0.4] at rate 0.2, not significant, and -1.3 [-2.8,
+0.2] at 0.1. The plain net's loss variation jumps from epoch to epoch (at rate 0.1, epochs 5-15: by a median
factor of 3.5 between neighbouring epochs and up to 99, BN's by 1.3 and up to 4.1; at epoch 10 its seeds range
0.15-3.17, BN's 0.03-0.04), so its paired differences are wide. And by epoch 10 BN has trained
further: its training loss is 2.0-3.2 times lower than the plain net's at rate 0.1 and 7-20 times at 0.2 (per
seed, metrics.csv's train_loss), and the probes shrink with the loss. At matched training loss (summary.md's
"Landscape probes at matched training loss": each epoch of BN's run against the plain net's epoch of the closest
training loss, within a factor 1.25, which comes a median 3 epochs later at rate 0.1 and 5 at 0.2), BN's probes
are still smaller, as the paper says: the gradient's change is 0.13 times the plain net's [0.11, 0.16] at rate 0.1
and 0.23 [0.15, 0.36] at 0.2, the loss's variation 0.15 [0.10, 0.22] and 0.24 [0.13, 0.43], and the effective β
less so, 0.69 [0.61, 0.77] and 0.91 [0.83, 0.99] (Holm-adjusted over these 6 contrasts, p < 0.01 for all but β
at rate 0.2, p = 0.033). The gap narrows at the lowest losses: at epoch 20, where the two nets' losses have come
together, none of the three probes' paired differences excludes 0 (the figure's rows against the training loss
show the curves meeting). At init BN's β is larger, +14.7 [+12.8, +16.6], the opposite of the paper, whose curves
start apart. The plain net also trains well here: final test accuracy 88.8-89.0% against BN's 85.1-87.2%.
"""

from normbench.config import Config, DataConfig, ModelConfig, ReportConfig, SweepConfig, TrainConfig

BN_VS_NONE = "norm=batch - norm=none"
# The middle of training, after 90 steps: both networks still learning, far from the loss's floor of the end. BN's
# loss is lower there, 2-20 times: summary.md also contrasts the probes at matched training loss.
MIDDLE = "epoch=10"
SANTURKAR = "Santurkar et al. (2018), Fig. 4, VGG on CIFAR-10, along the whole run:"
PAPER_SAYS = {
    "landscape_loss_range": "with BN the loss varies less along the gradient.",
    "landscape_grad_change_max": "with BN the gradient changes less along it (it is more predictive).",
    "landscape_beta": "with BN the effective beta-smoothness is smaller.",
}


def get_config() -> Config:
    return Config(
        name="landscape",
        data=DataConfig(source="mnist5k", n_train=1000),
        # He init (init_scale 1), the scale at which the plain net trains as well as BN (configs/init_scale.py).
        model=ModelConfig(init="he"),
        train=TrainConfig(epochs=20, landscape_steps=(0.25, 0.5, 1.0, 2.0, 4.0)),
        sweep=SweepConfig(norms=("batch", "none"), seeds=(0, 1, 2, 3, 4), learning_rates=(0.1, 0.2)),
        report=ReportConfig(
            # The paper's sign for each: smaller with BN (< 0). In the middle of training at both rates, and at
            # init (epoch 1), where the paper's curves start apart too.
            claims=(
                *(
                    f"{metric}, {MIDDLE}, learning_rate={rate}: {BN_VS_NONE} < 0 # {SANTURKAR} {says}"
                    for rate in (0.1, 0.2)
                    for metric, says in PAPER_SAYS.items()
                ),
                # At init too: the paper's curves start apart.
                f"landscape_beta, epoch=1, learning_rate=0.1: {BN_VS_NONE} < 0"
                f" # {SANTURKAR} {PAPER_SAYS['landscape_beta']}",
            ),
        ),
        figures=("landscape",),
    )
