//! The `jira-gitlab-sync` binary: the command line (flags, wiring, printing, signals, exit codes)
//! over the library.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    cli::run(cli::Cli::parse_checked())
}
