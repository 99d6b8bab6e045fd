"""Training, evaluation, checkpoints, distributed set-up and model analysis."""
