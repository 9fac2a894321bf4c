//! Test harness (placeholder during bring-up).
