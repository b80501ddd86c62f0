//! `haven`: the command-line interface. Parses arguments, asks for secrets, shows
//! progress and prints results (text or `--json`); every verb is a library call into
//! `haven-repo`. Errors print as one line and map to exit codes:
//! 0 success, 1 failure, 2 bad usage, 3 finished but incomplete (files skipped or not
//! restored; the output names them).

mod cli;
mod commands;
mod location;
mod output;
mod secret;

use clap::Parser;

fn main() {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => std::process::exit(output::usage_error(e)),
    };
    let code = match commands::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("haven: error: {}", output::error_line(&e));
            1
        }
    };
    std::process::exit(code);
}
