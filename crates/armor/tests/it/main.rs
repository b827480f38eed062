//! Every integration test of the `armor` binary, in one test binary.
//!
//! - `cli`: `armor sign` / `call` / `configure`.
//! - `api`: the server, black-box, through `spawn_app()`.

mod cli;
