//! SMTP client protocol (placeholder, being written).
