"""Models: the model families (one file each), preprocessing, training and evaluation with
baselines, the promotion decision, reports, and the integrity of what is registered."""
