"""`normbench scorecard` and `normbench.scorecard(...)`: every norm through one battery of small tests, one table
with intervals. (The package is not `normbench.scorecard`, which is the API's function.)

    normbench scorecard                       # every registered norm, into runs/scorecard/
    normbench scorecard group rms --out DIR   # those, with BatchNorm and LayerNorm, the references
    normbench scorecard --show                # what it would train, and for how long, without training

The battery (`battery.py`): init-scale robustness (the textbook's MLP), the small-batch drop (the images-per-
statistic study's MLP at ghost groups of 4 and 128), CNN and ViT accuracy at tuned rates, and the step time over no
norm's. The run (`run.py`): a results directory per norm and test, resumed like any study, so one more norm trains
only its own runs. The numbers (`scores.py`) and the files (`report.py`): scorecard.md, .csv and .png.

Cost on 2 cores, as `--show` estimated it at 5bc940e (training only, at the machine's calibrated rate): 54.5 min for
the 15 built-in norms, 4.5 min for a batch-dependent norm and 3.2 min for another (CNN 1.3, small batch 1.3, cost
0.9, ViT 0.5, init scale 0.5), and at worst 85 min more if every tuned rate sat at its grid's edge and every
extension step were taken. Measured with about one of the two cores (the machine shared): BatchNorm's battery took
8.3 min (its small-batch and CNN rates each extended: 3 more cells), LayerNorm's 4.7 min; compiling, which the
estimate leaves out, 5-9 s a cell for the MLP, 9-14 s for the CNN, 10-18 s for the ViT.

Expected, from those two runs (each as its study found it): BN - LN +1.4 points [+0.6, +2.2] on the CNN and +3.9
[+2.6, +5.1] on the ViT, both significant; BN's drop at g = 4 -1.6 [-2.2, -1.1]; BN's step 2.2x no norm's in the CNN
and 1.6x in the ViT, LN's 1.8x and 1.2x.
"""
