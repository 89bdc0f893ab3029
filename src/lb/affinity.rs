//! Session affinity by client address, Kubernetes' `sessionAffinity: ClientIP`.
//!
//! A service with affinity sends every new flow of a client to the backend that client used
//! last, as long as the client started a flow within the timeout (Kubernetes'
//! `sessionAffinityConfig.clientIP.timeoutSeconds`, default 10800 s; kube-proxy's iptables mode
//! implements it with the `recent` match, refreshed by every new connection, and so does this).
//!
//! The first choice for a client is the Maglev slot of a hash of its address alone
//! ([`crate::lb::FlowKey::source_hash`]), so that every worker and every node picks the same
//! backend for it without sharing any state; the table only remembers the choice, so that the
//! client stays put when the Maglev table changes, until its timeout passes.
//!
//! The table is bounded and allocated once: a set-associative array of buckets of
//! 4 entries; a new client takes an empty or expired way of its bucket, else the least
//! recently used one.

use alloc::vec;
use alloc::vec::Vec;

use super::flow::FlowKey;
use crate::time::{Duration, Instant};

/// Entries per bucket.
pub const WAYS: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Client (`src`) and service (`dst`, `dst_port`, protocol); `src_port` is 0.
    key: FlowKey,
    backend: u128,
    backend_port: u16,
    last_used: u64,
    in_use: bool,
}

/// Client -> backend memory for the services with `ClientIP` affinity, one per worker.
#[derive(Debug, Clone)]
pub struct AffinityTable {
    slots: Vec<Slot>,
    buckets_mask: u64,
    seed: u64,
}

impl AffinityTable {
    /// A table for about `capacity` clients (rounded up to a power of two, at least
    /// the 4 ways of one bucket); `seed` keys its hash.
    pub fn new(capacity: usize, seed: u64) -> AffinityTable {
        let buckets = capacity
            .div_ceil(WAYS)
            .clamp(1, 1 << 28)
            .next_power_of_two();
        let blank = Slot {
            key: FlowKey {
                src: 0,
                dst: 0,
                src_port: 0,
                dst_port: 0,
                protocol: super::flow::Protocol::Tcp,
                ipv6: false,
            },
            backend: 0,
            backend_port: 0,
            last_used: 0,
            in_use: false,
        };
        AffinityTable {
            slots: vec![blank; buckets * WAYS],
            buckets_mask: (buckets - 1) as u64,
            seed,
        }
    }

    /// The number of entries the table holds at most.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn bucket(&mut self, key: &FlowKey) -> &mut [Slot] {
        let b = (key.hash(self.seed) & self.buckets_mask) as usize * WAYS;
        let end = b + WAYS;
        &mut self.slots[b..end]
    }

    /// The backend remembered for `key` if it was used less than `timeout` before `now`.
    pub(crate) fn lookup(
        &mut self,
        key: &FlowKey,
        now: Instant,
        timeout: Duration,
    ) -> Option<(u128, u16)> {
        let now = now.as_nanos();
        let timeout = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        self.bucket(key)
            .iter()
            .find(|s| s.in_use && s.key == *key)
            .filter(|s| now.saturating_sub(s.last_used) < timeout)
            .map(|s| (s.backend, s.backend_port))
    }

    /// Remembers (or refreshes) `backend` for `key` at `now`.
    pub(crate) fn record(
        &mut self,
        key: &FlowKey,
        backend: u128,
        backend_port: u16,
        now: Instant,
        timeout: Duration,
    ) {
        let now = now.as_nanos();
        let timeout = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bucket(key);
        let position = bucket
            .iter()
            .position(|s| s.in_use && s.key == *key)
            .or_else(|| {
                bucket
                    .iter()
                    .position(|s| !s.in_use || now.saturating_sub(s.last_used) >= timeout)
            })
            .or_else(|| {
                bucket
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(i, _)| i)
            });
        if let Some(slot) = position.and_then(|i| bucket.get_mut(i)) {
            *slot = Slot {
                key: *key,
                backend,
                backend_port,
                last_used: now,
                in_use: true,
            };
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::lb::flow::Protocol;

    fn key(client: u128) -> FlowKey {
        FlowKey {
            src: client,
            dst: 99,
            src_port: 0,
            dst_port: 80,
            protocol: Protocol::Tcp,
            ipv6: false,
        }
    }

    #[test]
    fn remembers_until_timeout() {
        let mut t = AffinityTable::new(16, 1);
        let timeout = Duration::from_secs(10800);
        let t0 = Instant::from_secs(5);
        assert_eq!(t.lookup(&key(1), t0, timeout), None);
        t.record(&key(1), 7, 8080, t0, timeout);
        assert_eq!(
            t.lookup(&key(1), t0 + Duration::from_secs(10799), timeout),
            Some((7, 8080))
        );
        assert_eq!(
            t.lookup(&key(1), t0 + Duration::from_secs(10800), timeout),
            None
        );
        assert_eq!(t.lookup(&key(2), t0, timeout), None);
    }

    #[test]
    fn bounded_and_keeps_recent() {
        let mut t = AffinityTable::new(4, 1);
        assert_eq!(t.capacity(), 4);
        let timeout = Duration::from_secs(100);
        for c in 0..10u64 {
            t.record(
                &key(u128::from(c)),
                u128::from(c),
                1,
                Instant::from_secs(c),
                timeout,
            );
        }
        let now = Instant::from_secs(10);
        let kept: Vec<u128> = (0..10)
            .filter(|&c| t.lookup(&key(c), now, timeout).is_some())
            .collect();
        assert_eq!(kept, [6, 7, 8, 9]);
    }
}
