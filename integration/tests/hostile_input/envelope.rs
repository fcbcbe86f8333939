//! See hostile_input.rs.
