//! Every integration test of the `armor` binary, in one test binary.
//!
//! - `cli`: `armor sign` / `call` / `configure`.
//! - `api`: the server, black-box, through `api::spawn_app()`.
//! - `cluster`: two nodes sharing a database and Redis.
//! - `differential`: the client signer against the server's verifier.
//! - `gateway`: `armor serve --upstream` in front of an echo service
//!   (`gateway::scrub`: what it removes and replaces in headers).
//! - `portal`: the management portal in headless Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod cli;
mod cluster;
mod differential;
mod gateway;
mod portal;
