"""The rollout programme (checklist items, evidence, sign-offs) arrives with its issue."""
