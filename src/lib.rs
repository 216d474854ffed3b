//! forge: a declarative, content-addressed build system for whole Linux systems.
//!
//! # Data flow (and dependency direction)
//!
//! ```text
//! recipe  ->  graph  ->  derivation  ->  executor  ->  sandbox
//! (TOML)      (DAG)      (canonical,      (rayon        (namespaces,
//!                         BLAKE3)          scheduler)     root assembly)
//!                                             |
//!                                             v
//!                          source / import -> store  (objects, tree hash, SQLite)
//! ```
//!
//! A module may use the modules to its left/below, never the other way round.
//! `tree` (the Merkle tree hash), `hash` (digest newtypes) and `fswalk` (walking trees by
//! directory descriptor) are leaves every module may use. Only `cli` prints; the library returns values and typed errors.
//!
//! # Files forge keeps on disk (each format has one owning module and a version)
//!
//! | what                          | owner             | version tag            |
//! |-------------------------------|-------------------|------------------------|
//! | recipe / set TOML             | [`recipe`]        | format v1 (DESIGN.md)  |
//! | canonical derivation          | [`derivation`]    | `forge-drv-v1`         |
//! | tree hash of outputs          | [`tree`]          | `forge-tree-v1`        |
//! | store layout + SQLite schema  | [`store`]         | `forge-store-v1`, `user_version` |
//!
//! See `docs/` for the user-facing description of each.

pub mod hash;
pub mod tree;
pub(crate) mod fswalk;
pub mod units;
pub mod recipe;
pub mod graph;
pub mod derivation;
pub mod source;
pub mod import;
pub mod store;
pub mod sandbox;
pub mod executor;
pub mod shell;
pub mod check;
pub mod diff;
pub mod audit;
pub mod why;
pub mod timeline;
pub mod cache;
pub mod cli;
