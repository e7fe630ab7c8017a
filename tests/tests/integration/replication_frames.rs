//! The replicator treats frames from the network as hostile: a malformed frame
//! closes that connection with a clear reason and nothing else; one address
//! cannot take more than its share of the replicator's connections.

use crate::support::{client_message_ids, message_records, send, start_producer};
use meridian_tests::meridian_proto::meridian::v1::{ReplicationFrame, replication_frame};
use meridian_tests::{Role, TestCluster, wait_until};
use prost::Message as _;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const ALPN: &[u8] = b"meridian-repl/1";
/// The application error code of a connection closed for a malformed frame.
const MALFORMED_ERROR_CODE: u32 = 2;
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Replication connections one IP address may hold at once (the
/// replicator's `CONNECTIONS_PER_ADDRESS_MAX`).
const CONNECTIONS_PER_ADDRESS_MAX: usize = 16;

/// A QUIC client endpoint that trusts `server_region`'s replicator certificate
/// and, when `client_region`'s key is on disk too, can present that region's
/// identity (for a replicator that asks for client certificates).
fn client_endpoint(
    cluster: &TestCluster,
    server_region: &str,
    client_region: &str,
) -> anyhow::Result<quinn::Endpoint> {
    let tls_dir = |region: &str| cluster.data_dir(region).join("replicator").join("tls");
    let server_certificate = read(&tls_dir(server_region).join("cert.der"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(server_certificate))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let client_certificate = tls_dir(client_region).join("cert.der");
    let client_key = tls_dir(client_region).join("key.der");
    let mut tls = if client_key.is_file() {
        let key = PrivateKeyDer::try_from(read(&client_key)?)
            .map_err(|error| anyhow::anyhow!("parse {}: {error}", client_key.display()))?;
        builder
            .with_client_auth_cert(vec![CertificateDer::from(read(&client_certificate)?)], key)?
    } else {
        builder.with_no_client_auth()
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls)?,
    )));
    Ok(endpoint)
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| anyhow::anyhow!("read {}: {error}", path.display()))
}

/// What the replicator did with a bad frame.
#[derive(Debug)]
struct Refusal {
    goodbye: Option<String>,
    close: Option<quinn::ConnectionError>,
}

impl Refusal {
    fn says_malformed(&self) -> bool {
        let goodbye = self
            .goodbye
            .as_deref()
            .is_some_and(|reason| reason.contains("malformed"));
        let close = matches!(
            &self.close,
            Some(quinn::ConnectionError::ApplicationClosed(close))
                if close.error_code == quinn::VarInt::from_u32(MALFORMED_ERROR_CODE)
                    && String::from_utf8_lossy(&close.reason).contains("malformed")
        );
        goodbye || close
    }
}

/// Opens a bidirectional stream to `server`, writes `bytes` and records how the
/// replicator answers: a Goodbye frame, a connection close, or neither.
async fn send_bad_frame(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    server_name: &str,
    bytes: &[u8],
) -> anyhow::Result<Refusal> {
    let connection = tokio::time::timeout(CLOSE_TIMEOUT, endpoint.connect(server, server_name)?)
        .await
        .map_err(|_| anyhow::anyhow!("QUIC handshake with {server_name} timed out"))??;
    let (mut send, mut receive) = connection.open_bi().await?;
    send.write_all(bytes).await?;

    let mut goodbye = None;
    let read_frames = async {
        loop {
            let mut length = [0_u8; 4];
            if receive.read_exact(&mut length).await.is_err() {
                return;
            }
            let length = u32::from_be_bytes(length) as usize;
            if length > 16 * 1024 * 1024 {
                return;
            }
            let mut frame = vec![0_u8; length];
            if receive.read_exact(&mut frame).await.is_err() {
                return;
            }
            if let Ok(ReplicationFrame {
                frame: Some(replication_frame::Frame::Goodbye(bye)),
            }) = ReplicationFrame::decode(frame.as_slice())
            {
                goodbye = Some(bye.reason);
                return;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, read_frames).await;
    let close = tokio::time::timeout(CLOSE_TIMEOUT, connection.closed())
        .await
        .ok();
    if close.is_none() {
        connection.close(quinn::VarInt::from_u32(0), b"test done");
    }
    Ok(Refusal { goodbye, close })
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_replication_frame_is_refused_without_panic() {
    let mut cluster = TestCluster::builder()
        .regions(2)
        .build()
        .await
        .expect("start a two-region cluster");
    let endpoint = client_endpoint(&cluster, "b", "a").expect("a QUIC client for b's replicator");
    let server = cluster.replicator_address("b");
    let server_name = "b.replicator.meridian";

    let oversized = u32::MAX.to_be_bytes().to_vec();
    let mut garbage = 16_u32.to_be_bytes().to_vec();
    // 16 bytes with every continuation bit set: not a valid protobuf varint.
    garbage.extend_from_slice(&[0xFF; 16]);
    for (what, bytes) in [
        ("a 4 GiB length prefix", oversized),
        ("16 bytes of garbage", garbage),
    ] {
        let refusal = send_bad_frame(&endpoint, server, server_name, &bytes)
            .await
            .unwrap_or_else(|error| panic!("send {what} to b's replicator: {error:#}"));
        assert!(
            refusal.says_malformed(),
            "b's replicator did not refuse {what} as malformed (close code {MALFORMED_ERROR_CODE}, \
             reason containing \"malformed\", or a Goodbye saying so): {refusal:?}"
        );
        assert!(
            cluster.is_running("b", Role::Replicator),
            "b's replicator died on {what}"
        );
    }

    // One address gets its share of the replicator's connections and no
    // more (a's real link from 127.0.0.1 holds one place of the share).
    let attempts = futures::future::join_all((0..=CONNECTIONS_PER_ADDRESS_MAX).map(|_| async {
        endpoint
            .connect(server, server_name)
            .map_err(anyhow::Error::from)?
            .await
            .map_err(anyhow::Error::from)
    }))
    .await;
    let refused = attempts.iter().filter(|attempt| attempt.is_err()).count();
    assert!(
        refused >= 1 && refused < attempts.len(),
        "of {} connections from one address, {refused} were refused; expected some but not all \
         (at most {CONNECTIONS_PER_ADDRESS_MAX} at once): {:?}",
        attempts.len(),
        attempts
            .iter()
            .filter_map(|attempt| attempt.as_ref().err())
            .next()
    );
    for connection in attempts.into_iter().flatten() {
        connection.close(quinn::VarInt::from_u32(0), b"test done");
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"test done");

    let log = cluster.log("b", Role::Replicator);
    assert!(
        log.contains("refusing replication connection"),
        "b's replicator did not log the refused connections"
    );
    assert!(!log.contains("panicked"), "b's replicator panicked");
    assert!(
        log.lines()
            .any(|line| line.contains("WARN") && line.contains("malformed")),
        "b's replicator logged no WARN about the malformed frames"
    );

    // The real link a → b still works.
    let producer = start_producer(&cluster.router_endpoint("a"))
        .await
        .expect("start a producer via a's router");
    let id = send(&producer, b"after the malformed frames".to_vec())
        .await
        .expect("send via a");
    wait_until(
        Duration::from_secs(30),
        format!("message {id} reaches b"),
        || async {
            let records = message_records(&cluster, "b").await?;
            anyhow::Ok(client_message_ids(&records).contains(&id))
        },
    )
    .await
    .expect("replication a → b still works");
    assert!(
        cluster.is_running("b", Role::Replicator),
        "b's replicator is still running"
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), producer.shutdown()).await;
    cluster.finish();
}
