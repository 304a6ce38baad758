//! The `ioscale` command: a thin binary over the library.

mod app;
mod bench;
mod cluster;
mod config;
mod env_file;
mod lb;
mod logging;
mod ops;
mod signals;
mod stats;
mod trim;

use std::process::ExitCode;

use clap::Parser;

use config::{Cli, Command};

fn main() -> ExitCode {
    // `.env` never overrides the real environment, and flags override both (clap). The
    // workers of `ioscale cluster` read neither: their options come from the cluster.
    if !cluster::as_worker()
        && let Err(message) = env_file::load()
    {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    if let Err(error) = cli.check() {
        error.exit();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ioscale: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let logs = match &cli.command {
        Command::Serve(options) => Some((options.server_id(), options.log.log_format)),
        Command::Lb(options) => Some(("lb".to_owned(), options.log.log_format)),
        Command::Cluster(options) => Some(("cluster".to_owned(), options.log.log_format)),
        Command::Bench(_) => None,
    };
    if let Some((id, format)) = &logs {
        logging::init(id, *format);
    }
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(options) => app::serve(options).await.map(|()| ExitCode::SUCCESS),
            Command::Lb(options) => lb::command::run(options).await.map(|()| ExitCode::SUCCESS),
            Command::Cluster(options) => cluster::run(options).await.map(|()| ExitCode::SUCCESS),
            // Its verdict decides: see `ioscale bench --help`.
            Command::Bench(options) => bench::run(options).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            if logs.is_some() {
                tracing::error!("{error:#}");
            } else {
                eprintln!("ioscale: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}
