//! Model test: the forwarding table against a `HashMap` reference, over random sequences of
//! learning, static inserts and removals, lookups, ageing on a fake clock, flushes, per-VNI
//! configuration and flood lists, with bounds small enough that every refusal happens.
//!
//! The reference states the rules directly: entries per (VNI, MAC); a learned entry moves, a
//! static one drops the frame; last-seen in whole ticks of the refresh granularity (1 s); an
//! entry expires once `ageing` whole ticks have passed since its last tick; refusals when the
//! table (10), the VNI or the IPv6 VTEP table (3 addresses) is full; a new IPv6 destination
//! takes room before the old one is released.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use switchyard::fdb::{
    Destination, Entry, EntryKind, Fdb, FdbConfig, FdbError, Found, Learn, VniConfig,
};
use switchyard::time::{Duration, Instant};
use switchyard::wire::EthernetAddress;
use switchyard::{DropReason, PortId, Vni};

const CAPACITY: usize = 10;
const PER_VNI: u32 = 6;
const IPV6_VTEPS: usize = 3;
const FLOOD_MEMBERS: usize = 3;
const DEFAULT_AGEING_SECS: u64 = 5;
const VNIS: [u32; 4] = [0, 1, 2, 0x01_0001];
const MACS: u8 = 8;

fn vni(index: usize) -> Vni {
    Vni::new(VNIS[index % VNIS.len()]).unwrap()
}

/// MAC number `n`; 255 stands for a multicast source.
fn mac(n: u8) -> EthernetAddress {
    if n == 255 {
        EthernetAddress([0x01, 0, 0x5e, 0, 0, 1])
    } else {
        EthernetAddress([0x02, 0, 0, 0, 0, n])
    }
}

fn destination(kind: u8, n: u8) -> Destination {
    match kind % 3 {
        0 => Destination::Port(PortId(u32::from(n))),
        1 => Destination::Vtep(IpAddr::V4(Ipv4Addr::new(198, 18, 0, n))),
        _ => Destination::Vtep(IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            0,
            u16::from(n),
        ))),
    }
}

fn v6_of(destination: Destination) -> Option<Ipv6Addr> {
    match destination {
        Destination::Vtep(IpAddr::V6(address)) => Some(address),
        _ => None,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Learn(usize, u8, Destination),
    InsertStatic(usize, u8, Destination),
    Remove(usize, u8),
    Age,
    FlushVni(usize),
    FlushPort(u8),
    FlushVtep(Destination),
    Configure(usize, u64, u32, bool),
    SetFlood(usize, Vec<Destination>),
}

fn any_destination() -> impl Strategy<Value = Destination> {
    (0u8..3, 0u8..5).prop_map(|(kind, n)| destination(kind, n))
}

fn any_op() -> impl Strategy<Value = Op> {
    let mac = prop_oneof![9 => 0u8..MACS, 1 => Just(255u8)];
    prop_oneof![
        3 => (0u64..2500).prop_map(Op::Advance),
        10 => (0usize..4, mac, any_destination()).prop_map(|(v, m, d)| Op::Learn(v, m, d)),
        2 => (0usize..4, 0u8..MACS, any_destination())
            .prop_map(|(v, m, d)| Op::InsertStatic(v, m, d)),
        2 => (0usize..4, 0u8..MACS).prop_map(|(v, m)| Op::Remove(v, m)),
        2 => Just(Op::Age),
        1 => (0usize..4).prop_map(Op::FlushVni),
        1 => (0u8..5).prop_map(Op::FlushPort),
        1 => any_destination().prop_map(Op::FlushVtep),
        1 => (0usize..4, 1u64..8, 0u32..7, proptest::bool::weighted(0.8))
            .prop_map(|(v, a, m, l)| Op::Configure(v, a, m, l)),
        1 => (0usize..4, proptest::collection::vec(any_destination(), 0..5))
            .prop_map(|(v, members)| Op::SetFlood(v, members)),
    ]
}

#[derive(Debug, Clone, Copy)]
struct ModelEntry {
    destination: Destination,
    is_static: bool,
    last_tick: u64,
}

#[derive(Debug, Clone, Copy)]
struct ModelVni {
    ageing_ticks: u64,
    max_entries: u32,
    learning: bool,
}

impl Default for ModelVni {
    fn default() -> Self {
        ModelVni {
            ageing_ticks: DEFAULT_AGEING_SECS,
            max_entries: PER_VNI,
            learning: true,
        }
    }
}

#[derive(Default)]
struct Model {
    now: u64,
    entries: HashMap<(Vni, [u8; 6]), ModelEntry>,
    vnis: HashMap<Vni, ModelVni>,
    flood: HashMap<Vni, Vec<Destination>>,
}

impl Model {
    fn tick(&self) -> u64 {
        self.now / 1_000_000_000
    }

    fn vni(&self, vni: Vni) -> ModelVni {
        self.vnis.get(&vni).copied().unwrap_or_default()
    }

    fn vni_len(&self, vni: Vni) -> usize {
        self.entries.keys().filter(|(v, _)| *v == vni).count()
    }

    /// IPv6 addresses named by an entry or a flood list.
    fn live_v6(&self) -> BTreeSet<Ipv6Addr> {
        self.entries
            .values()
            .map(|e| e.destination)
            .chain(self.flood.values().flatten().copied())
            .filter_map(v6_of)
            .collect()
    }

    /// Whether naming `destination` once more needs a free IPv6 slot that is not there.
    fn no_room_for(&self, destination: Destination) -> bool {
        let live = self.live_v6();
        v6_of(destination).is_some_and(|a| !live.contains(&a) && live.len() >= IPV6_VTEPS)
    }

    fn learn(&mut self, vni: Vni, mac: EthernetAddress, from: Destination) -> Learn {
        if mac.is_multicast() {
            return Learn::Dropped(DropReason::FdbSourceMacInvalid);
        }
        let tick = self.tick();
        let config = self.vni(vni);
        let no_room = self.no_room_for(from);
        let full = self.entries.len() >= CAPACITY;
        let vni_full = self.vni_len(vni) >= config.max_entries as usize;
        match self.entries.get_mut(&(vni, mac.0)) {
            Some(entry) if entry.destination == from => {
                if entry.is_static || tick <= entry.last_tick {
                    Learn::Fresh
                } else {
                    entry.last_tick = tick;
                    Learn::Refreshed
                }
            }
            Some(entry) if entry.is_static => Learn::Dropped(DropReason::FdbStaticMove),
            Some(_) if !config.learning => Learn::Disabled,
            Some(_) if no_room => Learn::Refused(DropReason::FdbVtepTableFull),
            Some(entry) => {
                let old = entry.destination;
                entry.destination = from;
                entry.last_tick = tick;
                Learn::Moved { from: old }
            }
            None if !config.learning => Learn::Disabled,
            None if full => Learn::Refused(DropReason::FdbFull),
            None if vni_full => Learn::Refused(DropReason::FdbVniFull),
            None if no_room => Learn::Refused(DropReason::FdbVtepTableFull),
            None => {
                self.entries.insert(
                    (vni, mac.0),
                    ModelEntry {
                        destination: from,
                        is_static: false,
                        last_tick: tick,
                    },
                );
                Learn::Inserted
            }
        }
    }

    fn insert_static(
        &mut self,
        vni: Vni,
        mac: EthernetAddress,
        destination: Destination,
    ) -> Result<Option<Destination>, FdbError> {
        let no_room = self.no_room_for(destination);
        let static_entry = ModelEntry {
            destination,
            is_static: true,
            last_tick: 0,
        };
        if let Some(entry) = self.entries.get_mut(&(vni, mac.0)) {
            if no_room {
                return Err(FdbError::VtepTableFull);
            }
            let old = entry.destination;
            *entry = static_entry;
            return Ok(Some(old));
        }
        if self.entries.len() >= CAPACITY {
            return Err(FdbError::Full);
        }
        if self.vni_len(vni) >= self.vni(vni).max_entries as usize {
            return Err(FdbError::VniFull);
        }
        if no_room {
            return Err(FdbError::VtepTableFull);
        }
        self.entries.insert((vni, mac.0), static_entry);
        Ok(None)
    }

    fn remove_learned_where(&mut self, mut remove: impl FnMut(Vni, &ModelEntry) -> bool) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|&(vni, _), entry| entry.is_static || !remove(vni, entry));
        before - self.entries.len()
    }

    fn age(&mut self) -> usize {
        let tick = self.tick();
        let ageing: HashMap<Vni, u64> = VNIS
            .iter()
            .map(|&v| {
                let v = Vni::new(v).unwrap();
                (v, self.vni(v).ageing_ticks)
            })
            .collect();
        self.remove_learned_where(|vni, entry| tick - entry.last_tick >= ageing[&vni])
    }

    fn set_flood(&mut self, vni: Vni, members: &[Destination]) -> Result<(), FdbError> {
        let mut unique = Vec::new();
        for member in members {
            if !unique.contains(member) {
                unique.push(*member);
            }
        }
        if unique.len() > FLOOD_MEMBERS {
            return Err(FdbError::FloodListTooLong);
        }
        let live = self.live_v6();
        let needed = unique
            .iter()
            .filter_map(|&d| v6_of(d))
            .filter(|a| !live.contains(a))
            .count();
        if live.len() + needed > IPV6_VTEPS {
            return Err(FdbError::VtepTableFull);
        }
        self.flood.insert(vni, unique);
        Ok(())
    }

    fn entries(&self) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self
            .entries
            .iter()
            .map(|(&(vni, mac), e)| Entry {
                vni,
                mac: EthernetAddress(mac),
                destination: e.destination,
                kind: if e.is_static {
                    EntryKind::Static
                } else {
                    EntryKind::Learned
                },
                last_seen: (!e.is_static).then(|| Instant::from_secs(e.last_tick)),
            })
            .collect();
        entries.sort_by_key(|e| (e.vni, e.mac.0));
        entries
    }
}

fn check(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let fdb = Fdb::new(FdbConfig {
        capacity: CAPACITY as u32,
        max_entries_per_vni: PER_VNI,
        ageing: Duration::from_secs(DEFAULT_AGEING_SECS),
        refresh_granularity: Duration::from_secs(1),
        max_vnis: VNIS.len() as u32,
        max_ipv6_vteps: IPV6_VTEPS as u32,
        max_flood_members: FLOOD_MEMBERS as u32,
        hash_seed: 7,
    })
    .unwrap();
    let mut model = Model::default();
    let mut flood = fdb.flood_buffer();
    for (step, op) in ops.into_iter().enumerate() {
        let now = Instant::from_nanos(model.now);
        match op.clone() {
            Op::Advance(millis) => model.now += millis * 1_000_000,
            Op::Learn(v, m, d) => {
                let expected = model.learn(vni(v), mac(m), d);
                prop_assert_eq!(
                    fdb.learn(vni(v), mac(m), d, now),
                    expected,
                    "{}: {:?}",
                    step,
                    op
                );
            }
            Op::InsertStatic(v, m, d) => {
                let expected = model.insert_static(vni(v), mac(m), d);
                prop_assert_eq!(
                    fdb.insert_static(vni(v), mac(m), d),
                    expected,
                    "{}: {:?}",
                    step,
                    op
                );
            }
            Op::Remove(v, m) => {
                let expected = model
                    .entries
                    .remove(&(vni(v), mac(m).0))
                    .map(|e| e.destination);
                prop_assert_eq!(fdb.remove(vni(v), mac(m)), expected, "{}: {:?}", step, op);
            }
            Op::Age => prop_assert_eq!(fdb.age(now), model.age(), "{}: {:?}", step, op),
            Op::FlushVni(v) => {
                let expected = model.remove_learned_where(|vn, _| vn == vni(v));
                prop_assert_eq!(fdb.flush_vni(vni(v)), expected, "{}: {:?}", step, op);
            }
            Op::FlushPort(p) => {
                let port = Destination::Port(PortId(u32::from(p)));
                let expected = model.remove_learned_where(|_, e| e.destination == port);
                prop_assert_eq!(
                    fdb.flush_port(PortId(u32::from(p))),
                    expected,
                    "{}: {:?}",
                    step,
                    op
                );
            }
            Op::FlushVtep(d) => {
                let expected = match d {
                    Destination::Vtep(_) => model.remove_learned_where(|_, e| e.destination == d),
                    Destination::Port(_) => continue,
                };
                let Destination::Vtep(address) = d else {
                    continue;
                };
                prop_assert_eq!(fdb.flush_vtep(address), expected, "{}: {:?}", step, op);
            }
            Op::Configure(v, ageing, max_entries, learning) => {
                let config = VniConfig {
                    ageing: Duration::from_secs(ageing),
                    max_entries,
                    learning,
                };
                fdb.configure_vni(vni(v), config).unwrap();
                model.vnis.insert(
                    vni(v),
                    ModelVni {
                        ageing_ticks: ageing,
                        max_entries,
                        learning,
                    },
                );
                prop_assert_eq!(fdb.vni_config(vni(v)), config);
            }
            Op::SetFlood(v, members) => {
                let expected = model.set_flood(vni(v), &members);
                prop_assert_eq!(
                    fdb.set_flood_list(vni(v), &members),
                    expected,
                    "{}: {:?}",
                    step,
                    op
                );
            }
        }

        // The whole state agrees after every step.
        let now = Instant::from_nanos(model.now);
        let mut entries = fdb.entries(now);
        entries.sort_by_key(|e| (e.vni, e.mac.0));
        prop_assert_eq!(&entries, &model.entries(), "after {}: {:?}", step, op);
        prop_assert_eq!(fdb.len(), model.entries.len());
        prop_assert_eq!(fdb.ipv6_vteps(), model.live_v6().len());
        // The batch lookup of every key (hits and misses) agrees with the model too.
        let keys: Vec<(Vni, EthernetAddress)> = (0..VNIS.len())
            .flat_map(|v| (0..MACS).map(move |m| (vni(v), mac(m))))
            .collect();
        let mut found = vec![Found::NOTHING; keys.len()];
        fdb.lookup_batch(&keys, &mut found);
        for (&(v, m), found) in keys.iter().zip(&found) {
            let expected = model.entries.get(&(v, m.0)).map(|e| e.destination);
            prop_assert_eq!(
                found.destination(),
                expected,
                "batch, after {}: {:?}",
                step,
                op
            );
        }
        for v in 0..VNIS.len() {
            prop_assert_eq!(fdb.vni_len(vni(v)), model.vni_len(vni(v)));
            for m in 0..MACS {
                let expected = model
                    .entries
                    .get(&(vni(v), mac(m).0))
                    .map(|e| e.destination);
                prop_assert_eq!(fdb.lookup(vni(v), mac(m)), expected);
                let got = fdb.get(vni(v), mac(m), now);
                prop_assert_eq!(got.map(|e| e.destination), expected);
            }
            fdb.flood_list(vni(v), &mut flood);
            let expected = model.flood.get(&vni(v)).cloned().unwrap_or_default();
            prop_assert_eq!(flood.as_slice(), expected.as_slice());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn fdb_agrees_with_a_hashmap(ops in proptest::collection::vec(any_op(), 1..200)) {
        check(ops)?;
    }
}
