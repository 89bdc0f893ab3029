//! Time as an argument: the core never reads a clock.
//!
//! The caller passes `now` as an [`Instant`], nanoseconds since an epoch of its choosing (a
//! backend uses `CLOCK_MONOTONIC`, a test a fake clock that it advances by hand). Durations are
//! [`core::time::Duration`]. Arithmetic saturates instead of panicking: a clock that steps back
//! must never crash the data path, only make an entry look fresh a little longer.

use core::ops::{Add, Sub};
pub use core::time::Duration;

/// A point in time: nanoseconds since an epoch the caller chooses, monotonic by contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant(0);

    /// `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// `micros` microseconds after the epoch (saturating).
    pub const fn from_micros(micros: u64) -> Instant {
        Instant(micros.saturating_mul(1_000))
    }

    /// `millis` milliseconds after the epoch (saturating).
    pub const fn from_millis(millis: u64) -> Instant {
        Instant(millis.saturating_mul(1_000_000))
    }

    /// `secs` seconds after the epoch (saturating).
    pub const fn from_secs(secs: u64) -> Instant {
        Instant(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Whole seconds since the epoch.
    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000_000
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + duration`, or `None` past the end of the clock (about 584 years).
    pub fn checked_add(self, duration: Duration) -> Option<Instant> {
        let nanos = u64::try_from(duration.as_nanos()).ok()?;
        self.0.checked_add(nanos).map(Instant)
    }

    /// `self + duration`, stopping at the end of the clock.
    pub fn saturating_add(self, duration: Duration) -> Instant {
        self.checked_add(duration).unwrap_or(Instant(u64::MAX))
    }

    /// `self - duration`, stopping at the epoch.
    pub fn saturating_sub(self, duration: Duration) -> Instant {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(nanos))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturating: see [`Instant::saturating_add`].
    fn add(self, duration: Duration) -> Instant {
        self.saturating_add(duration)
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    /// Saturating: see [`Instant::saturating_sub`].
    fn sub(self, duration: Duration) -> Instant {
        self.saturating_sub(duration)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: see [`Instant::saturating_duration_since`].
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(Instant::from_secs(3).as_nanos(), 3_000_000_000);
        assert_eq!(Instant::from_millis(1500).as_secs(), 1);
        assert_eq!(Instant::from_micros(7).as_nanos(), 7_000);
        assert_eq!(Instant::from_secs(u64::MAX).as_nanos(), u64::MAX);
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_secs(10);
        assert_eq!(t + Duration::from_secs(5), Instant::from_secs(15));
        assert_eq!(t - Duration::from_secs(20), Instant::ZERO);
        assert_eq!(t - Instant::from_secs(4), Duration::from_secs(6));
        assert_eq!(Instant::from_secs(4) - t, Duration::ZERO);
        assert_eq!(
            Instant::from_nanos(u64::MAX) + Duration::from_secs(1),
            Instant::from_nanos(u64::MAX)
        );
        assert_eq!(t.checked_add(Duration::MAX), None);
    }
}
