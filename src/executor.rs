//! The scheduler: builds a [`crate::graph::Graph`] on a rayon pool.
