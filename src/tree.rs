//! The Merkle tree hash of store objects and file sources (`forge-tree-v1`,
//! docs/store-format.md), and output normalization.
