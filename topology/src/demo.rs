//! The built-in demo topology that `meridian up` starts without a file.
//!
//! `examples/three-regions.toml` describes the same deployment as a file
//! (with data directories relative to the file); a test keeps the two equal.

use crate::{
    ConsumeFrom, FlushMode, Group, Link, MessageType, Region, RouterMode, Site, Topic, Topology,
};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

/// Name of the demo's one topic.
pub const DEMO_TOPIC: &str = "demo";

impl Topology {
    /// Three regions on 127.0.0.1 — `eu-west` (public, ports 8081–8084),
    /// `us-east` (public, 8181–8184) and `on-prem` (private, 8281–8283, no
    /// replicator address: it dials its hubs eu-west and us-east), each port
    /// block being router, node, admin, replicator; each node serves HTTP on
    /// the port before its block (8080, 8180, 8280) and STOMP on 61613
    /// (STOMP's usual port), 61713 and 61813 — with data in
    /// `data_root/<region>`, sync flush, links eu-west—us-east 40 ms,
    /// eu-west—on-prem 8 ms and us-east—on-prem 45 ms, and one topic `demo`
    /// (8 queues, every message type, replicated to all three regions,
    /// consumed from the earliest message), consumer groups `demo-fifo`
    /// (ordered) and `demo-retry` (two delivery attempts, then its
    /// dead-letter topic), and no drill.
    ///
    /// Pass an absolute `data_root` if the topology is written to a file for
    /// other processes: relative data directories are resolved against the
    /// file's directory when it is read back.
    pub fn demo(data_root: &Path) -> Topology {
        let region = |name: &str, site: Site, first_port: u16, stomp_port: u16| {
            let address =
                |offset: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, first_port + offset));
            let region = Region {
                site,
                router: address(0),
                node: address(1),
                admin: address(2),
                http: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, first_port - 1))),
                stomp: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, stomp_port))),
                replicator: (site == Site::Public).then(|| address(3)),
                hubs: match site {
                    Site::Public => Vec::new(),
                    Site::Private => vec!["eu-west".to_owned(), "us-east".to_owned()],
                },
                data_dir: data_root.join(name),
                flush: FlushMode::Sync,
                router_mode: RouterMode::Proxy,
                storage_memory_mb: Region::DEFAULT_STORAGE_MEMORY_MB,
            };
            (name.to_owned(), region)
        };
        let regions = BTreeMap::from([
            region("eu-west", Site::Public, 8081, 61613),
            region("us-east", Site::Public, 8181, 61713),
            region("on-prem", Site::Private, 8281, 61813),
        ]);
        let topic = Topic {
            queues: 8,
            message_types: MessageType::ALL.to_vec(),
            replicate_to: ["eu-west", "us-east", "on-prem"]
                .map(str::to_owned)
                .to_vec(),
            consume_from: ConsumeFrom::Earliest,
            durability: Default::default(),
            geo_copies: 1,
            retention_ms: crate::DEFAULT_RETENTION_MS,
            retention_bytes: None,
            transaction_checks: Default::default(),
        };
        let groups = BTreeMap::from([
            (
                "demo-broadcast".to_owned(),
                Group {
                    broadcast: true,
                    ..Group::default()
                },
            ),
            (
                "demo-fifo".to_owned(),
                Group {
                    fifo: true,
                    ..Group::default()
                },
            ),
            (
                "demo-retry".to_owned(),
                Group {
                    max_attempts: 2,
                    ..Group::default()
                },
            ),
        ]);
        Topology {
            groups,
            regions,
            links: vec![
                Link::new("eu-west", "us-east", 40),
                Link::new("eu-west", "on-prem", 8),
                Link::new("us-east", "on-prem", 45),
            ],
            topics: BTreeMap::from([(DEMO_TOPIC.to_owned(), topic)]),
            drill: None,
            access: None,
            replication_tls: None,
            client_tls: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Site, Topology};
    use std::net::SocketAddr;
    use std::path::Path;

    #[test]
    fn demo_is_valid() {
        Topology::demo(Path::new("/var/lib/meridian"))
            .validate()
            .expect("the demo topology is valid");
    }

    #[test]
    fn demo_has_the_documented_addresses() {
        let topology = Topology::demo(Path::new("/data"));
        let on_prem = topology.region("on-prem").expect("on-prem exists");
        assert_eq!(on_prem.site, Site::Private);
        assert_eq!(
            on_prem.router,
            "127.0.0.1:8281".parse::<SocketAddr>().expect("address")
        );
        assert_eq!(
            on_prem.node,
            "127.0.0.1:8282".parse::<SocketAddr>().expect("address")
        );
        assert_eq!(
            on_prem.admin,
            "127.0.0.1:8283".parse::<SocketAddr>().expect("address")
        );
        assert_eq!(on_prem.replicator, None, "private sites never listen");
        assert_eq!(on_prem.hubs, ["eu-west", "us-east"]);
        assert_eq!(on_prem.data_dir, Path::new("/data/on-prem"));
        let eu_west = topology.region("eu-west").expect("eu-west exists");
        assert_eq!(
            eu_west.node,
            "127.0.0.1:8082".parse::<SocketAddr>().expect("address")
        );
        assert_eq!(topology.distance_ms("us-east", "on-prem"), Some(45));
    }

    #[test]
    fn demo_matches_the_three_regions_example() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let text =
            std::fs::read_to_string(dir.join("three-regions.toml")).expect("example is readable");
        let example = Topology::from_toml_str(&text, &dir.join("three-regions.toml"))
            .expect("example is valid");
        assert_eq!(example, Topology::demo(&dir.join("data")));
    }
}
