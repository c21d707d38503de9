"""The team: users, roles, tokens, the audit trail and who may serve the app (docs/architecture.md)."""
