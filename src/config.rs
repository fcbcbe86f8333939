//! Settings (placeholder, being written).
