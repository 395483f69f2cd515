//! The `jira-gitlab-sync` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    jira_gitlab_sync::cli::run(jira_gitlab_sync::cli::Cli::parse())
}
