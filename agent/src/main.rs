//! Thin entry point: parse the command line, hand over to `app`.

use clap::Parser;

fn main() {
    let cli = edge_agent::cli::Cli::parse();
    std::process::exit(edge_agent::app::main(cli));
}
