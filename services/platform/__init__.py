"""The platform every room stands on: settings, the database session, plain errors, uploads (docs/architecture.md)."""
