//! `armor`: the server, the ARMOR-PSK signer and an API client in one binary.
//!
//! # Layout
//! - `client/`: `armor sign`, `armor call`, `armor configure` and the
//!   credentials profile file.
//! - `serve.rs`: `armor serve`, wiring configuration into `armor-server`.
//! - `admin.rs`: `armor admin ...` operator commands.
//! - `bench.rs`: `armor bench`, a load generator signing every request.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod admin;
mod bench;
mod client;
mod progress;
mod serve;

use clap::{Parser, Subcommand};

/// mimalloc instead of the C library's allocator. hyper takes a fresh 8 KiB
/// read buffer for every request (its read while the request is in flight
/// finds the last one still shared with the request's head), and glibc
/// serves that size past its per-thread caches, through its bins and their
/// consolidation; mimalloc (v3, its default build) serves small and medium
/// sizes from per-thread pages. Measured in docs/performance-log.md ("The
/// allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "armor",
    version,
    about = "ARMOR-PSK API keys: server, signer and client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the Authorization value for one request.
    Sign(client::SignArgs),
    /// Sign and send one request, print the status and body.
    Call(client::CallArgs),
    /// Write a credentials profile (~/.config/armor/credentials).
    Configure(client::ConfigureArgs),
    /// API keys of a server: create, list, roll, usage, delete.
    Keys(client::KeysArgs),
    /// Run the API server.
    Serve(Box<serve::ServeArgs>),
    /// Operator commands on a server's data directory.
    Admin(admin::AdminArgs),
    /// Load-test a route: requests/s and latency percentiles (ARMOR-PSK
    /// requests each signed with a fresh nonce).
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sign(a) => client::sign(a),
        Command::Call(a) => client::call(a),
        Command::Configure(a) => client::configure(a),
        Command::Keys(a) => client::keys(a),
        Command::Serve(a) => serve::run(*a),
        Command::Admin(a) => admin::run(a),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("armor: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
