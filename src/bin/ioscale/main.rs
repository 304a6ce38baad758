//! The `ioscale` command: a thin binary over the library.

mod app;
mod bench;
mod cluster;
mod config;
mod lb;
mod logging;
mod ops;
mod stats;

use std::process::ExitCode;

use clap::Parser;

use config::{Cli, Command};

fn main() -> ExitCode {
    // `.env` never overrides the real environment, and flags override both (clap).
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ioscale: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(options) => app::serve(options).await,
            Command::Lb(options) => lb::command::run(options).await,
            Command::Cluster(options) => cluster::run(options).await,
            Command::Bench(options) => bench::run(options).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ioscale: {error:#}");
            ExitCode::FAILURE
        }
    }
}
