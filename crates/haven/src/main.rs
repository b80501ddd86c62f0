//! `haven`: the command-line interface. Parses arguments, asks for secrets, shows
//! progress and prints results (text or `--json`); every verb is a library call into
//! `haven-repo`. Errors print as one line and map to exit codes:
//! 0 success, 1 failure, 2 bad usage, 3 finished but incomplete (files skipped or not
//! restored; the output names them).

mod cli;
mod commands;
mod location;
mod mount;
mod output;
mod secret;

use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => std::process::exit(output::usage_error(e)),
    };
    // Servers stop gracefully on their own signal handlers (a volume controller resigns
    // its lease so that another candidate takes over at once; a WAL receiver stores what
    // it received before it ends; a mount unmounts).
    let own_signals = matches!(
        args.command,
        cli::Command::Serve(_)
            | cli::Command::Mount(_)
            | cli::Command::Replica(cli::ReplicaCommand::Serve(_))
            | cli::Command::Volume(cli::VolumeCommand::Serve(_))
            | cli::Command::Wal(cli::WalCommand::Receive { .. })
    );
    if !own_signals {
        stop_children_on_signals();
    }
    let code = match commands::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("haven: error: {}", output::error_line(&e));
            1
        }
    };
    std::process::exit(code);
}

/// The programs Haven runs (dump tools, hooks, throwaway servers) lead their own process
/// groups, so that a deadline can stop a tool with its grandchildren; they therefore do
/// not get the terminal's Ctrl-C. On SIGINT, SIGTERM or SIGHUP they are killed before
/// Haven exits (`serve` stops gracefully instead, and kills what its abandoned jobs ran).
fn stop_children_on_signals() {
    let Ok(mut signals) = Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            haven_sources::process::kill_all();
            std::process::exit(128 + signal);
        }
    });
}
