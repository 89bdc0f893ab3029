//! Local ports: where a switch sends frames that stay on this host.

use core::fmt;

/// A local port of the switch (a tap device, a VM's virtio queue, a veth): an opaque number
/// that the backend assigns and the core only compares and stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PortId(pub u32);

impl PortId {
    /// The port number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {}", self.0)
    }
}

impl From<u32> for PortId {
    fn from(value: u32) -> PortId {
        PortId(value)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn number_round_trips() {
        assert_eq!(PortId::from(7).get(), 7);
        assert_eq!(PortId(u32::MAX).get(), u32::MAX);
    }
}
