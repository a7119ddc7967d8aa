"""A training run: Trainer set-up, events, loss, probes, task metric, output folders, and the run history."""
