"""Results on disk: the metrics table, the results directory, an unfinished run, statistics over seeds."""
