//! Network namespaces by name (`ip netns add NAME` makes `/run/netns/NAME`): a thread enters
//! one with `setns(2)`, and a socket opened there stays in that namespace wherever it is used
//! afterwards. Tests, benchmarks and the switch binary open their AF_PACKET ports this way.

// setns(2) on a descriptor we own.
#![allow(unsafe_code)]

use std::format;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::string::String;

/// Moves the calling thread into the network namespace `name` (`/run/netns/NAME`, or an
/// absolute path to a namespace file). Only this thread changes namespace; threads it spawns
/// afterwards inherit it.
pub fn enter(name: &str) -> io::Result<()> {
    let path = if name.starts_with('/') {
        String::from(name)
    } else {
        format!("/run/netns/{name}")
    };
    let file =
        File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("opening {path}: {e}")))?;
    // SAFETY: setns(2) takes a descriptor that is open for the duration of the call (`file`
    // owns it) and a namespace type; it touches no memory of ours.
    let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("setns({path}): {e}")));
    }
    Ok(())
}

/// Runs `f` on a new thread inside the network namespace `name` and returns its result: the
/// way to open sockets (and ports) there without moving the calling thread.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(name)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("thread in namespace panicked")))
    })
}
