//! MX routing policy (placeholder, being written).
