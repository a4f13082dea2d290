"""Model zoo: a registry of buildable architectures, self-describing checkpoints, and predictors."""
