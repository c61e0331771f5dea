"""The library core: the sweep's axes and grid, one run's training, and the loop over cells."""
