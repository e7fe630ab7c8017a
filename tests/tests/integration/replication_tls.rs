//! Mutual TLS between replicators (`[replication_tls]`, certificates from
//! `meridian certs`): records replicate; a dialer with a certificate of
//! another CA fails the handshake; a dialer with a certificate of this CA
//! that names another region than its Hello claims is refused at the
//! Hello; both are logged, and the rightful links stay up.

use crate::support::{CLIENT_CALL_TIMEOUT, receive_exactly, send, start_consumer, start_producer};
use meridian_tests::meridian_proto::meridian::v1::{Hello, ReplicationFrame, replication_frame};
use meridian_tests::{Role, TestCluster, wait_until};
use prost::Message as _;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const ALPN: &[u8] = b"meridian-repl/1";
/// The application error code of a connection refused at the Hello.
const HANDSHAKE_REFUSED: u32 = 1;

/// The name in a region's replicator certificate.
fn server_name(region: &str) -> String {
    format!("{region}.replicator.meridian")
}

/// A QUIC client that trusts the cluster's CA and presents `cert` / `key`.
fn client(
    ca: &Path,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<quinn::Endpoint> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca)?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls)?,
    )));
    Ok(endpoint)
}

/// A certificate for `name` signed by a CA of its own (not the cluster's).
fn foreign_identity(
    name: &str,
) -> anyhow::Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate()?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate()?;
    let certificate = params.signed_by(&key, &issuer)?;
    Ok((
        certificate.der().clone(),
        PrivateKeyDer::try_from(key.serialize_der()).map_err(|error| anyhow::anyhow!("{error}"))?,
    ))
}

/// Sends one message in `from` (adding it to `sent`, every message sent so
/// far) and checks that a fresh group in `to` receives exactly `sent`: the
/// topic is replicated to every region.
async fn replicates(
    cluster: &TestCluster,
    sent: &mut BTreeSet<String>,
    from: &str,
    to: &str,
    group: &str,
) -> anyhow::Result<()> {
    let producer = start_producer(&cluster.router_endpoint(from)).await?;
    sent.insert(send(&producer, format!("{from} to {to}").into_bytes()).await?);
    let consumer = start_consumer(&cluster.router_endpoint(to), group).await?;
    receive_exactly(
        &consumer,
        meridian_tests::TEST_TOPIC,
        sent,
        &format!("{group} in {to}"),
    )
    .await?;
    crate::support::shut_down(consumer, producer).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicators_use_mutual_tls_and_refuse_strangers() -> anyhow::Result<()> {
    let cluster = TestCluster::builder()
        .regions(3)
        .replication_tls()
        .build()
        .await?;
    let mut sent = BTreeSet::new();
    replicates(&cluster, &mut sent, "a", "b", "tls-b").await?;

    let server = cluster.replicator_address("a");
    let certs = cluster.temp_dir().join("certs");
    let ca = certs.join("ca.pem");

    // Another CA's certificate, even with the right name: no handshake.
    let (cert, key) = foreign_identity(&server_name("b"))?;
    let stranger = client(&ca, cert, key)?;
    // (In TLS 1.3 the dialer's side of the handshake may complete before
    // the acceptor has checked the dialer's certificate: the acceptor then
    // closes the connection.)
    let handshake = tokio::time::timeout(
        CLIENT_CALL_TIMEOUT,
        stranger.connect(server, &server_name("a"))?,
    )
    .await?;
    if let Ok(connection) = handshake {
        let closed = tokio::time::timeout(CLIENT_CALL_TIMEOUT, connection.closed()).await?;
        anyhow::ensure!(
            matches!(
                closed,
                quinn::ConnectionError::TransportError(_)
                    | quinn::ConnectionError::ConnectionClosed(_)
            ),
            "a certificate of another CA: the connection ended with {closed:?}"
        );
    }
    let log = cluster.log_path("a", Role::Replicator);
    wait_until(
        Duration::from_secs(10),
        "the failed handshake is logged",
        || {
            let logged = std::fs::read_to_string(&log)
                .is_ok_and(|text| text.contains("replication handshake failed"));
            async move { logged }
        },
    )
    .await?;

    // This CA's certificate of region b, with a Hello from region c.
    let cert = CertificateDer::from_pem_file(certs.join("b.pem"))?;
    let key = PrivateKeyDer::from_pem_file(certs.join("b-key.pem"))?;
    let impostor = client(&ca, cert, key)?;
    let connection = tokio::time::timeout(
        CLIENT_CALL_TIMEOUT,
        impostor.connect(server, &server_name("a"))?,
    )
    .await??;
    let (mut stream, _receive) = connection.open_bi().await?;
    let hello = ReplicationFrame {
        frame: Some(replication_frame::Frame::Hello(Hello {
            protocol_version: 1,
            from_region: "c".to_owned(),
            to_region: "a".to_owned(),
        })),
    }
    .encode_to_vec();
    let length = u32::try_from(hello.len())?.to_be_bytes();
    stream.write_all(&length).await?;
    stream.write_all(&hello).await?;
    let closed = tokio::time::timeout(CLIENT_CALL_TIMEOUT, connection.closed()).await?;
    match &closed {
        quinn::ConnectionError::ApplicationClosed(close)
            if close.error_code == quinn::VarInt::from_u32(HANDSHAKE_REFUSED)
                && String::from_utf8_lossy(&close.reason)
                    .contains("does not name c.replicator.meridian") => {}
        other => anyhow::bail!("an impostor's Hello was answered with {other:?}"),
    }
    wait_until(Duration::from_secs(10), "the refusal is logged", || {
        let logged = std::fs::read_to_string(&log)
            .is_ok_and(|text| text.contains("its certificate does not name c.replicator.meridian"));
        async move { logged }
    })
    .await?;

    // The rightful links are up.
    replicates(&cluster, &mut sent, "c", "a", "tls-a").await?;
    replicates(&cluster, &mut sent, "b", "c", "tls-c").await?;
    Ok(())
}
