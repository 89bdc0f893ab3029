//! The io_uring underlay for `vswitch run` (`backend = "io-uring"`).

use std::io;

use switchyard::backend::Port;

use crate::config::File;

/// Opens the io_uring underlay described by `file`.
pub fn open_underlay(file: &File) -> io::Result<Port> {
    let _ = file;
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the io_uring underlay is not in this build yet; use backend = \"af-packet\"",
    ))
}
