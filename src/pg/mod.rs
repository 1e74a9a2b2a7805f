//! PostgreSQL plumbing shared by the stages: TLS per `sslmode` and ordinary SQL connections.
