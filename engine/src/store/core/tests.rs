//! Unit tests of the projections.
