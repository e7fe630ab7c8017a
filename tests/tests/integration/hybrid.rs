//! Hybrid cloud: two public regions and two private sites, each site behind
//! its own hub. A message sent at one site reaches the other site only
//! through both hubs, and the sites' replicators listen on nothing.

use crate::support::{
    ack, message_records, receive, send, start_consumer, start_producer, topic_count, within,
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
            "c.replicator.meridian",
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
async fn a_message_sent_at_one_private_site_reaches_the_other_through_both_hubs() {
    // a and b public; c behind a, d behind b.
    let cluster = TestCluster::builder()
        .regions(4)
        .private_site(2, &[0])
        .private_site(3, &[1])
        .build()
        .await
        .expect("start a hybrid cluster");

    let producer = start_producer(&cluster.router_endpoint("c"))
        .await
        .expect("producer at site c");
    let mut sent = BTreeSet::new();
    for index in 0..MESSAGES {
        let body = format!("from site c {index}").into_bytes();
        sent.insert(send(&producer, body).await.expect("send at c"));
    }
    for region in ["a", "b", "d"] {
        wait_until(
            Duration::from_secs(60),
            &format!("{region} stores every message sent at c"),
            || async { anyhow::Ok(topic_count(&cluster, region).await? >= MESSAGES as u64) },
        )
        .await
        .expect("replication through the hubs");
    }
    // Site d heard of c's messages through a and then b, and stored each once.
    let at_d = message_records(&cluster, "d").await.expect("d's log");
    assert_eq!(at_d.len(), MESSAGES, "d stores each message once");
    for record in &at_d {
        assert_eq!(record.path, ["c", "a", "b", "d"], "the route to d");
    }

    // Consumed at the other site and in both public regions, each once.
    for region in ["d", "a", "b"] {
        let group = format!("readers-in-{region}");
        let consumer = start_consumer(&cluster.router_endpoint(region), &group)
            .await
            .expect("consumer");
        let mut received = Vec::new();
        within(
            Duration::from_secs(60),
            &format!("{region} delivers c's messages"),
            async {
                while received.len() < MESSAGES {
                    for message in receive(&consumer).await.expect("receive") {
                        received.push(message.message_id().to_owned());
                        ack(&consumer, &message).await.expect("ack");
                    }
                }
            },
        )
        .await
        .expect("delivered");
        let distinct: BTreeSet<String> = received.iter().cloned().collect();
        assert_eq!(
            distinct.len(),
            received.len(),
            "{region} delivered a message twice"
        );
        assert_eq!(distinct, sent, "{region} delivers exactly what c sent");
        let _ = tokio::time::timeout(Duration::from_secs(10), consumer.shutdown()).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), producer.shutdown()).await;

    // The sites' replicators listen on nothing: the only UDP socket each
    // holds is the one it dials from, and a QUIC handshake to it is refused.
    for site in ["c", "d"] {
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
