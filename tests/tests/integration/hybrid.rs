//! Hybrid cloud, as `topology/examples/hybrid.toml` describes it (on held
//! ports): public eu-west and ap-south, private factory-lyon behind eu-west
//! and store-pune behind ap-south. A message sent at one site reaches the
//! other site only through both hubs, and the sites' replicators listen on
//! nothing.

use crate::support::{
    message_records, receive_exactly, send_to, start_consumer_of, start_producer_of, topic_count_of,
};
use meridian_tests::{Role, TestCluster, wait_until};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

const MESSAGES: usize = 10;

/// The local UDP ports of the sockets process `pid` holds (from
/// `/proc/<pid>/fd` and `/proc/net/udp{,6}`).
fn udp_ports_of(pid: u32) -> anyhow::Result<BTreeSet<u16>> {
    let mut inodes = BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let target = std::fs::read_link(entry?.path())?;
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
        {
            inodes.insert(inode.to_owned());
        }
    }
    let mut ports = BTreeSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            if inodes.contains(*inode)
                && let Some((_, port)) = local.rsplit_once(':')
            {
                ports.insert(u16::from_str_radix(port, 16)?);
            }
        }
    }
    Ok(ports)
}

/// Tries a QUIC handshake with whatever listens on `port` of loopback.
async fn quic_handshake(port: u16) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| error.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|error| error.to_string())?;
    let endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .map_err(|error| error.to_string())?;
    let connecting = endpoint
        .connect_with(
            quinn::ClientConfig::new(Arc::new(crypto)),
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            "site.replicator.meridian",
        )
        .map_err(|error| error.to_string())?;
    let outcome = match tokio::time::timeout(Duration::from_secs(3), connecting).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no answer".to_owned()),
    };
    endpoint.close(0u32.into(), b"probe done");
    outcome
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hybrid_example_carries_a_site_message_through_both_hubs_to_the_other_site() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology/examples/hybrid.toml");
    let cluster = TestCluster::builder()
        .topology_file(example)
        .build()
        .await
        .expect("start the hybrid example");

    let producer = start_producer_of(&cluster.router_endpoint("factory-lyon"), "orders")
        .await
        .expect("producer at factory-lyon");
    let mut sent = BTreeSet::new();
    for index in 0..MESSAGES {
        let body = format!("order from lyon {index}").into_bytes();
        sent.insert(
            send_to(&producer, "orders", body)
                .await
                .expect("send at lyon"),
        );
    }
    for region in ["eu-west", "ap-south", "store-pune"] {
        wait_until(
            Duration::from_secs(60),
            &format!("{region} stores every order sent at factory-lyon"),
            || async {
                anyhow::Ok(topic_count_of(&cluster, region, "orders").await? >= MESSAGES as u64)
            },
        )
        .await
        .expect("replication through the hubs");
    }
    // store-pune heard of Lyon's orders through eu-west, then ap-south, and
    // stored each once.
    let at_pune = message_records(&cluster, "store-pune")
        .await
        .expect("store-pune's log");
    assert_eq!(at_pune.len(), MESSAGES, "store-pune stores each order once");
    for record in &at_pune {
        assert_eq!(
            record.path,
            ["factory-lyon", "eu-west", "ap-south", "store-pune"],
            "the route to store-pune"
        );
    }

    // Consumed at the other site and in both public regions, each once.
    for region in ["store-pune", "eu-west", "ap-south"] {
        let group = format!("readers-in-{region}");
        let consumer = start_consumer_of(&cluster.router_endpoint(region), &group, "orders")
            .await
            .expect("consumer");
        receive_exactly(
            &consumer,
            "orders",
            &sent,
            &format!("{region} delivers exactly what Lyon sent"),
        )
        .await
        .expect("delivered");
        let _ = tokio::time::timeout(Duration::from_secs(10), consumer.shutdown()).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), producer.shutdown()).await;

    // Telemetry stays in Europe, and store-pune, none of whose hubs hold it,
    // refuses to take it.
    let pune_telemetry = start_producer_of(&cluster.router_endpoint("store-pune"), "telemetry")
        .await
        .expect("telemetry producer at store-pune");
    let refused = send_to(&pune_telemetry, "telemetry", b"reading".to_vec())
        .await
        .expect_err("store-pune does not serve telemetry");
    assert!(
        format!("{refused:#}").contains("not served in region store-pune"),
        "the refusal says why: {refused:#}"
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), pune_telemetry.shutdown()).await;

    // The sites' replicators listen on nothing: the only UDP socket each
    // holds is the one it dials from, and a QUIC handshake to it is refused.
    for site in ["factory-lyon", "store-pune"] {
        let pid = cluster
            .pid(site, Role::Replicator)
            .expect("the site's replicator runs");
        let ports = udp_ports_of(pid).expect("read the replicator's sockets");
        assert_eq!(
            ports.len(),
            1,
            "{site}'s replicator holds one UDP socket: {ports:?}"
        );
        for port in ports {
            let outcome = quic_handshake(port).await;
            let refused = outcome
                .as_ref()
                .is_err_and(|error| error.contains("refused") || error == "no answer");
            assert!(
                refused,
                "a QUIC handshake with {site}'s replicator (port {port}) was not refused: {outcome:?}"
            );
        }
        assert!(
            cluster
                .log(site, Role::Replicator)
                .contains("listening=false"),
            "{site}'s replicator says it does not listen"
        );
    }
    cluster.finish();
}
