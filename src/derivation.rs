//! Derivations: the canonical, versioned description of one build, and its hashes.
//!
//! Owner of the canonical derivation encoding (`forge-drv-v1`, docs/derivations.md).
//! - drv hash: BLAKE3 of the canonical bytes with inputs named by their drv hashes;
//! - resolved key: BLAKE3 of the canonical bytes with inputs named by their out hashes.
