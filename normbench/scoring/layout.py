"""Where a scorecard keeps what (`normbench.scoring.run` describes the whole directory)."""

BATTERY = "battery.json"  # the battery that the directory's results are of
RUNS = "runs"  # runs/<norm>/<test>/: a norm's results of one test
NORM = "norm.json"  # runs/<norm>/norm.json, written last: the norm's battery is complete
COST = "cost.csv"  # runs/<norm>/cost.csv: its cost test's timings
