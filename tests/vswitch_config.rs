//! The vswitch program's configuration file and Maglev listing, tested through the modules
//! the program is built from.

#[path = "../examples/vswitch/config.rs"]
#[allow(dead_code)]
mod config;
#[path = "../examples/vswitch/maglev.rs"]
mod maglev;

use std::net::IpAddr;

use config::{parse, HostFacts};
use switchyard::fdb::Destination;
use switchyard::wire::EthernetAddress;

const EXAMPLE: &str = include_str!("../examples/vswitch/example.toml");

fn host() -> HostFacts {
    HostFacts {
        underlay_mac: Some(EthernetAddress([0x02, 0xee, 0, 0, 0, 1])),
        underlay_mtu: Some(9000),
        underlay_prefix_len: Some(24),
    }
}

fn check(text: &str) -> Result<config::Config, config::ConfigError> {
    parse(text).and_then(|file| file.to_config(&host(), &mut config::PortIds::default()))
}

#[test]
fn the_documented_example_is_valid_and_means_what_it_says() {
    let config = check(EXAMPLE).unwrap();
    let switch = &config.switch;
    assert_eq!(
        switch.underlay.local_ip,
        "198.18.0.1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        switch.underlay.local_mac,
        EthernetAddress([0x02, 0xee, 0, 0, 0, 1])
    );
    // The file's MTU wins over the interface's.
    assert_eq!(switch.underlay.encap.mtu, 1500);
    assert_eq!(switch.underlay.encap.udp_port, 4789);
    assert!(!switch.underlay.encap.udp_checksum_ipv4);
    assert_eq!(switch.vnis.len(), 1);
    assert!(switch.vnis[0].suppress_arp_nd);
    assert_eq!(
        switch.vnis[0].remote_vteps,
        ["198.18.0.2".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(switch.ports.len(), 1);
    let security = switch.ports[0].security.as_ref().unwrap();
    assert_eq!(security.macs, [EthernetAddress([2, 0, 0, 0, 0, 1])]);
    assert_eq!(
        switch.static_entries[0].destination,
        Destination::Vtep("198.18.0.2".parse().unwrap())
    );
    assert_eq!(switch.services.len(), 1);
    assert_eq!(switch.services[0].vni.get(), 42);
    assert_eq!(config.ports[0].name, "pod-a");
    assert_eq!(config.ports[0].interface, "veth-pa");
}

/// Each broken file is refused with the key at fault in the message.
#[test]
fn errors_name_the_offending_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "vni = 42\nallowed_macs",
            "vni = 43\nallowed_macs",
            "port[0].vni",
        ),
        (
            "mac = \"02:00:00:00:00:02\"\nremote",
            "mac = \"02:00:00:00:00:zz\"\nremote",
            "fdb[0].mac",
        ),
        ("remote = \"198.18.0.2\"", "port = \"pod-b\"", "fdb[0].port"),
        ("ttl = 64", "ttl = 0", "underlay.ttl"),
        (
            "source_port_range = [49152, 65535]",
            "source_port_range = [65535, 49152]",
            "underlay.source_port_range",
        ),
        (
            "maglev_table_size = 65537",
            "maglev_table_size = 65536",
            "service[0].maglev_table_size",
        ),
        (
            "flood = [\"198.18.0.2\"]",
            "flood = [\"198.18.0.1\"]",
            "vni[0].flood",
        ),
        (
            "addr = \"198.19.0.2:8080\"",
            "addr = \"198.19.0.9:8080\"",
            "service[0]",
        ),
        ("df = \"set\"", "df = \"sometimes\"", "line 17"),
        ("workers = 1", "wrokers = 1", "line 4"),
    ];
    for &(from, to, key) in cases {
        assert!(EXAMPLE.contains(from), "{from}");
        let broken = EXAMPLE.replacen(from, to, 1);
        let error = check(&broken).expect_err(to);
        assert!(
            error.to_string().starts_with(key),
            "{to:?}: expected an error about {key}, got {error}"
        );
    }
}

#[test]
fn maglev_listing_is_the_load_balancers_table() {
    // The paper's size-7 example has no names; here: three backends on a prime table, with
    // each slot naming its backend, and the same table whatever the order given.
    let a = maglev::table(
        13,
        &[
            "198.19.0.1:80".into(),
            "198.19.0.2:80".into(),
            "198.19.0.3:80:2".into(),
        ],
    )
    .unwrap();
    let b = maglev::table(
        13,
        &[
            "198.19.0.3:80:2".into(),
            "198.19.0.1:80".into(),
            "198.19.0.2:80".into(),
        ],
    )
    .unwrap();
    assert_eq!(a, b);
    let lines: Vec<&str> = a.lines().collect();
    assert_eq!(lines.len(), 13);
    for (slot, line) in lines.iter().enumerate() {
        let (index, name) = line.split_once(' ').unwrap();
        assert_eq!(index, slot.to_string());
        assert!(name.starts_with("198.19.0."), "{line}");
    }
    // Weight 2 owns about half the slots.
    let heavy = lines
        .iter()
        .filter(|l| l.ends_with("198.19.0.3:80"))
        .count();
    assert!((5..=8).contains(&heavy), "{heavy} of 13");
    // The same table the load balancer builds for the service.
    use switchyard::lb::{Backend, LoadBalancer, Protocol, ServiceConfig, ServiceKey, TableSize};
    let mut lb = LoadBalancer::new();
    let key = ServiceKey::new("198.19.255.1:80".parse().unwrap(), Protocol::Tcp);
    lb.set_service(
        key,
        ServiceConfig {
            table_size: TableSize::new(13).unwrap(),
            ..ServiceConfig::new(vec![
                Backend::new("198.19.0.1:80".parse().unwrap()),
                Backend::new("198.19.0.2:80".parse().unwrap()),
                Backend::new("198.19.0.3:80".parse().unwrap()).with_weight(2),
            ])
        },
    )
    .unwrap();
    let table = lb.service(&key).unwrap();
    for (slot, line) in lines.iter().enumerate() {
        let member = table.maglev().slots()[slot];
        assert!(
            line.ends_with(&table.names()[usize::from(member)]),
            "slot {slot}"
        );
    }
    // Errors: a non-prime size, a bad weight, a name that is no address.
    assert!(maglev::table(12, &["198.19.0.1:80".into()]).is_err());
    assert!(maglev::table(13, &["198.19.0.1:80:x".into()]).is_err());
    assert!(maglev::table(13, &["web".into()]).is_err());
}
