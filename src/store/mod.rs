//! The store: content-addressed objects, sources, derivations, logs, SQLite metadata.
//! Owner of the store layout (`forge-store-v1`) and of `store-schema.sql`.
