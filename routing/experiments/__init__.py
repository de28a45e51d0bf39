"""A/B experiments, gradual rollouts and their rollback triggers (routing/README.md#experiments)."""
