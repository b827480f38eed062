//! The armor server.
