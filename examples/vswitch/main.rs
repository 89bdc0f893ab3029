//! `vswitch`: the switchyard overlay switch as a program.
//!
//! ```sh
//! vswitch demo                                # the in-memory cluster demo, no privileges
//! vswitch check CONFIG.toml                   # validate a configuration, naming bad keys
//! vswitch maglev --size 13 10.0.0.1:80 10.0.0.2:80:2   # a Maglev table, slot by slot
//! ```
//!
//! The configuration file is TOML; see `config.rs` for every key and its default.

mod config;
mod demo;
mod maglev;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "vswitch", about = "The switchyard overlay switch", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the in-memory cluster demo (no privileges needed; ends by itself).
    Demo,
    /// Validates a configuration file and explains what is wrong, naming the key.
    Check {
        /// The TOML file.
        config: std::path::PathBuf,
    },
    /// Prints the Maglev table for a set of backends: one line per slot, slot then backend.
    Maglev {
        /// The table size, a prime.
        #[arg(long, default_value_t = 65537)]
        size: u32,
        /// Backends as `ip:port` or `ip:port:weight` (`[v6]:port[:weight]` for IPv6).
        #[arg(required = true)]
        backends: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo => {
            demo::main();
            ExitCode::SUCCESS
        }
        Command::Check { config } => check(&config),
        Command::Maglev { size, backends } => match maglev::table(size, &backends) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("vswitch maglev: {message}");
                ExitCode::from(2)
            }
        },
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    // The interface's own MAC and MTU are read at run time; a check without them uses
    // placeholders only where the file leaves them out.
    let host = config::HostFacts {
        underlay_mac: Some(switchyard::wire::EthernetAddress([0x02, 0, 0, 0, 0, 1])),
        ..config::HostFacts::default()
    };
    match config::parse(&text).and_then(|file| file.to_config(&host)) {
        Ok(config) => {
            println!(
                "{}: ok ({} ports, {} VNIs, {} static entries, {} neighbours, {} services)",
                path.display(),
                config.switch.ports.len(),
                config.switch.vnis.len(),
                config.switch.static_entries.len(),
                config.switch.neighbors.len(),
                config.switch.services.len()
            );
            for port in &config.ports {
                println!(
                    "  port {} = {} on interface {}{}",
                    port.name,
                    port.id,
                    port.interface,
                    port.capture
                        .as_ref()
                        .map_or(String::new(), |c| format!(", captured to {}", c.display()))
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::from(1)
        }
    }
}
