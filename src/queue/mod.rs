//! The queue on disk (placeholder, being written).
