//! The pipeline's own tests.
