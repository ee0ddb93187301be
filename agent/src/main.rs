//! Thin entry point: parse the command line, hand over to `app`.

use clap::Parser;

fn main() {
    // Before any thread exists (see `memory`).
    edge_agent::memory::limit_arenas();
    let cli = edge_agent::cli::Cli::parse();
    // The one exit of a normal run: everything below main has returned by now.
    #[allow(clippy::disallowed_methods)]
    std::process::exit(edge_agent::app::main(cli));
}
