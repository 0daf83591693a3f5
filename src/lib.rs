//! The root package exists to own the end-to-end tests and benchmarks.
