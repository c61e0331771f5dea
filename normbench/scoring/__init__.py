"""`normbench scorecard` and `normbench.scorecard(...)`: every norm through one battery of small tests, one table
with intervals. (The package is not `normbench.scorecard`, which is the API's function.)

    normbench scorecard                       # every registered norm, into runs/scorecard/
    normbench scorecard group rms --out DIR   # those, with BatchNorm and LayerNorm, the references
    normbench scorecard --show                # what it would train, and for how long, without training

The battery (`battery.py`): init-scale robustness (the textbook's MLP), the small-batch drop (the images-per-
statistic study's MLP at ghost groups of 4 and 128), CNN and ViT accuracy at tuned rates, and the step time over no
norm's. The run (`run.py`): a results directory per norm and test, resumed like any study, so one more norm trains
only its own runs. The numbers (`scores.py`) and the files (`report.py`): scorecard.md, .csv and .png.

What the committed scorecard of the built-in norms (results/scorecard/) shows, and what it cost: docs/studies.md,
section scorecard. `--show` prints a battery's estimate before it trains.
"""
