//! `vswitch`: the switchyard overlay switch as a program.
//!
//! ```sh
//! vswitch demo                                # the in-memory cluster demo, no privileges
//! vswitch check CONFIG.toml                   # validate a configuration, naming bad keys
//! vswitch maglev --size 13 10.0.0.1:80 10.0.0.2:80:2   # a Maglev table, slot by slot
//! vswitch run CONFIG.toml                     # the switch on real interfaces (root)
//! vswitch ctl /run/switchyard.sock show fdb   # inspect and change it at run time
//! ```
//!
//! `run` and `ctl` need the crate's `af-packet` feature (and `io-uring` for that underlay):
//! `cargo run --release --features af-packet,io-uring --example vswitch -- run CONFIG.toml`.
//!
//! The configuration file is TOML; see `config.rs` for every key and its default.

#[cfg(feature = "af-packet")]
mod capture;
mod config;
#[cfg(feature = "af-packet")]
mod control;
mod demo;
mod maglev;
#[cfg(feature = "af-packet")]
mod metrics;
#[cfg(feature = "af-packet")]
mod run;
#[cfg(all(feature = "af-packet", feature = "io-uring"))]
mod uring;
#[cfg(all(feature = "af-packet", not(feature = "io-uring")))]
mod uring {
    //! Built without the `io-uring` feature.
    pub fn open_underlays(
        _: &crate::config::File,
        _: switchyard::wire::EthernetAddress,
        _: usize,
    ) -> std::io::Result<Vec<switchyard::backend::Port>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "built without the io-uring feature: rebuild with --features af-packet,io-uring",
        ))
    }
}

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
    /// Runs the switch on the interfaces of CONFIG (root; SIGHUP reloads, SIGINT/SIGTERM stop).
    Run {
        /// The TOML file.
        config: std::path::PathBuf,
    },
    /// Sends one request to a running switch's control socket and prints the answer.
    Ctl {
        /// The control socket (switch.control_socket in the configuration).
        socket: std::path::PathBuf,
        /// show fdb|ports|vnis|neighbors|services|counters|conntrack, or
        /// add|del fdb|flood|neighbor|backend key=value...
        #[arg(required = true, num_args = 2..)]
        request: Vec<String>,
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
        Command::Run { config } => run(&config),
        Command::Ctl { socket, request } => ctl(&socket, &request),
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

#[cfg(feature = "af-packet")]
fn run(path: &std::path::Path) -> ExitCode {
    use std::io::IsTerminal;
    // Logs go to stderr (stdout stays for output), coloured only on a terminal.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run::run(path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(feature = "af-packet")]
fn ctl(socket: &std::path::Path, request: &[String]) -> ExitCode {
    match control::client(socket, request) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vswitch ctl: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(not(feature = "af-packet"))]
fn run(_: &std::path::Path) -> ExitCode {
    without_backends()
}

#[cfg(not(feature = "af-packet"))]
fn ctl(_: &std::path::Path, _: &[String]) -> ExitCode {
    without_backends()
}

#[cfg(not(feature = "af-packet"))]
fn without_backends() -> ExitCode {
    eprintln!(
        "vswitch: built without the Linux backends; rebuild with \
         --features af-packet,io-uring"
    );
    ExitCode::from(2)
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
    match config::parse(&text)
        .and_then(|file| file.to_config(&host, &mut config::PortIds::default()))
    {
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
