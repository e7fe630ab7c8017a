//! TLS for replication links, as fits a local deployment.
//!
//! Every replicator generates a self-signed certificate for
//! [`server_name`]`(region)` on first start and keeps it (DER) in
//! `<data_dir>/replicator/tls/` (`cert.der`, and `key.der` with mode 0600),
//! reusing it on later starts. A dialer trusts exactly the certificate found in
//! the *peer's* data directory, which works because all regions of a local
//! deployment share one machine; a peer whose certificate is not there yet has
//! not started, which the dialer treats as retryable.
//!
//! In that mode only the accepting side is authenticated. With
//! `[replication_tls]` in the topology ([`Trust::DeploymentCa`]) links use
//! mutual TLS instead, across machines: every replicator presents a
//! certificate chain (PEM) that the deployment CA signed for
//! [`server_name`]`(region)`; the acceptor requires one from every dialer,
//! and after the Hello checks that it names the region the Hello claims
//! ([`certificate_names_region`]). A certificate of another CA fails the
//! handshake; a certificate of another region is refused at the Hello; both
//! are logged.
//!
//! The rustls ring provider is passed explicitly to every config instead of
//! relying on a process-wide default, so that the process may link other
//! providers without ambiguity. TLS 1.3 only (QUIC requires it); ALPN
//! [`ALPN`].

use crate::error::ReplicatorError;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The ALPN protocol of replication links.
pub const ALPN: &[u8] = b"meridian-repl/1";

const CERTIFICATE_FILE: &str = "cert.der";
const KEY_FILE: &str = "key.der";

/// How often an idle link sends a QUIC keep-alive: a third of the idle
/// timeout, so two lost keep-alives in a row do not end a healthy link.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(2_000);
/// How long a link may hear nothing from its peer before it counts as dead
/// (quinn's default is 30 s). A dead peer (a killed process, a cut link) is
/// noticed this fast, and the sender starts dialing again; drills showed
/// replication resuming half a minute after a peer's return with the default.
const IDLE_TIMEOUT: Duration = Duration::from_secs(6);

/// The DNS name in a region's replicator certificate, checked by dialers.
pub fn server_name(region: &str) -> String {
    format!("{region}.replicator.meridian")
}

/// `<data_dir>/replicator/tls`: where a region keeps its certificate and key.
pub fn tls_directory(data_dir: &Path) -> PathBuf {
    data_dir.join("replicator").join("tls")
}

/// The path of a region's certificate (what its peers trust).
pub fn certificate_path(data_dir: &Path) -> PathBuf {
    tls_directory(data_dir).join(CERTIFICATE_FILE)
}

/// A replicator's own certificate (with the chain up to its CA, if any)
/// and private key.
pub struct Identity {
    pub certificate: CertificateDer<'static>,
    /// Intermediate certificates after `certificate`, if any.
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Identity")
            .field("certificate_bytes", &self.certificate.len())
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    fn certificate_chain(&self) -> Vec<CertificateDer<'static>> {
        std::iter::once(self.certificate.clone())
            .chain(self.chain.iter().cloned())
            .collect()
    }

    /// The certificate chain and key in PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, ReplicatorError> {
        let pem_error =
            |path: &Path, error: rustls::pki_types::pem::Error| ReplicatorError::TlsFile {
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string()),
            };
        let mut chain = CertificateDer::pem_file_iter(cert)
            .map_err(|error| pem_error(cert, error))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| pem_error(cert, error))?
            .into_iter();
        let certificate = chain.next().ok_or_else(|| ReplicatorError::TlsFile {
            path: cert.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no CERTIFICATE block in the file",
            ),
        })?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|error| pem_error(key, error))?;
        Ok(Identity {
            certificate,
            chain: chain.collect(),
            key,
        })
    }
}

/// How a replicator proves who it is and checks its peers.
#[derive(Debug, Clone)]
pub enum Trust {
    /// One machine: self-signed certificates, a dialer trusts exactly the
    /// one in the peer's data directory; dialers present none. `identity`
    /// is `None` for a private site (it never accepts).
    Pinned { identity: Option<Arc<Identity>> },
    /// Mutual TLS with certificates of the deployment CA.
    DeploymentCa {
        roots: Arc<rustls::RootCertStore>,
        identity: Arc<Identity>,
    },
}

impl Trust {
    /// The trust rule the topology sets for `region`: its
    /// `[replication_tls]` files, else self-signed certificates (made on
    /// first start in the region's data directory; public regions only).
    pub fn load(
        topology: &meridian_topology::Topology,
        region: &str,
        local: &meridian_topology::Region,
    ) -> Result<Self, ReplicatorError> {
        let Some(tls) = topology.replication_tls.as_ref() else {
            let identity = match local.site {
                meridian_topology::Site::Public => {
                    Some(Arc::new(load_or_generate(region, &local.data_dir)?))
                }
                meridian_topology::Site::Private => None,
            };
            return Ok(Trust::Pinned { identity });
        };
        let identity = Identity::from_pem_files(&tls.cert_path(region), &tls.key_path(region))?;
        let mut roots = rustls::RootCertStore::empty();
        let authorities = CertificateDer::pem_file_iter(&tls.ca)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|error| ReplicatorError::TlsFile {
                path: tls.ca.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string()),
            })?;
        for authority in authorities {
            roots
                .add(authority)
                .map_err(|source| ReplicatorError::Tls {
                    region: region.to_owned(),
                    source,
                })?;
        }
        Ok(Trust::DeploymentCa {
            roots: Arc::new(roots),
            identity: Arc::new(identity),
        })
    }

    /// Whether an acceptor must check that a dialer's certificate names
    /// the region its Hello claims.
    pub fn checks_peer_names(&self) -> bool {
        matches!(self, Trust::DeploymentCa { .. })
    }

    /// The acceptor's QUIC config; `None` when this replicator has no
    /// identity to present (a private site in pinned mode).
    pub fn server_config(
        &self,
        region: &str,
    ) -> Result<Option<quinn::ServerConfig>, ReplicatorError> {
        match self {
            Trust::Pinned { identity: None } => Ok(None),
            Trust::Pinned {
                identity: Some(identity),
            } => server_config(region, identity).map(Some),
            Trust::DeploymentCa { roots, identity } => {
                let tls_error = |source| ReplicatorError::Tls {
                    region: region.to_owned(),
                    source,
                };
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::clone(roots),
                    provider(),
                )
                .build()
                .map_err(|error| tls_error(rustls::Error::General(error.to_string())))?;
                let mut tls = rustls::ServerConfig::builder_with_provider(provider())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(tls_error)?
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(identity.certificate_chain(), identity.key.clone_key())
                    .map_err(tls_error)?;
                tls.alpn_protocols = vec![ALPN.to_vec()];
                quic_server(region, tls).map(Some)
            }
        }
    }

    /// The dialer's QUIC config for `peer` (whose data directory pinned
    /// mode reads the certificate from).
    pub fn client_config(
        &self,
        peer: &str,
        peer_data_dir: &Path,
    ) -> Result<quinn::ClientConfig, ReplicatorError> {
        match self {
            Trust::Pinned { .. } => client_config(peer, peer_data_dir),
            Trust::DeploymentCa { roots, identity } => {
                let tls_error = |source| ReplicatorError::Tls {
                    region: peer.to_owned(),
                    source,
                };
                let mut tls = rustls::ClientConfig::builder_with_provider(provider())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(tls_error)?
                    .with_root_certificates(Arc::clone(roots))
                    .with_client_auth_cert(identity.certificate_chain(), identity.key.clone_key())
                    .map_err(tls_error)?;
                tls.alpn_protocols = vec![ALPN.to_vec()];
                quic_client(peer, tls)
            }
        }
    }
}

/// Whether the certificate `connection`'s peer presented names `region`
/// ([`server_name`]); false without one.
pub fn certificate_names_region(connection: &quinn::Connection, region: &str) -> bool {
    let Some(identity) = connection.peer_identity() else {
        return false;
    };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return false;
    };
    let Some(leaf) = chain.first() else {
        return false;
    };
    let Ok(certificate) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(server_name(region)) else {
        return false;
    };
    certificate.verify_is_valid_for_subject_name(&name).is_ok()
}

fn quic_server(
    region: &str,
    tls: rustls::ServerConfig,
) -> Result<quinn::ServerConfig, ReplicatorError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|source| {
        ReplicatorError::QuicCrypto {
            region: region.to_owned(),
            source,
        }
    })?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport(1));
    Ok(config)
}

fn quic_client(
    peer: &str,
    tls: rustls::ClientConfig,
) -> Result<quinn::ClientConfig, ReplicatorError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|source| {
        ReplicatorError::QuicCrypto {
            region: peer.to_owned(),
            source,
        }
    })?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport(2));
    Ok(config)
}

/// Loads the region's certificate and key, generating and storing them on first start.
pub fn load_or_generate(region: &str, data_dir: &Path) -> Result<Identity, ReplicatorError> {
    let directory = tls_directory(data_dir);
    let certificate_path = directory.join(CERTIFICATE_FILE);
    let key_path = directory.join(KEY_FILE);
    if certificate_path.exists() && key_path.exists() {
        let certificate = read_file(&certificate_path)?;
        let key = read_file(&key_path)?;
        return Ok(Identity {
            certificate: CertificateDer::from(certificate),
            chain: Vec::new(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        });
    }

    std::fs::create_dir_all(&directory).map_err(|source| ReplicatorError::CreateDirectory {
        path: directory.clone(),
        source,
    })?;
    let generated =
        rcgen::generate_simple_self_signed(vec![server_name(region)]).map_err(|source| {
            ReplicatorError::GenerateCertificate {
                region: region.to_owned(),
                source,
            }
        })?;
    let key = generated.signing_key.serialize_der();
    let certificate = generated.cert.der().clone();
    // The key first: a peer that sees the certificate may dial at once.
    write_atomically(&key_path, &key, 0o600)?;
    write_atomically(&certificate_path, &certificate, 0o644)?;
    Ok(Identity {
        certificate,
        chain: Vec::new(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, ReplicatorError> {
    std::fs::read(path).map_err(|source| ReplicatorError::TlsFile {
        path: path.to_owned(),
        source,
    })
}

/// Writes through a temporary file and a rename, so that readers never see
/// half a file; `mode` applies on Unix.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), ReplicatorError> {
    let temporary = path.with_extension("tmp");
    let io_error = |source| ReplicatorError::TlsFile {
        path: path.to_owned(),
        source,
    };
    // A leftover from a crash would keep its old mode: start from nothing.
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(io_error(source)),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&temporary).map_err(io_error)?;
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(io_error)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Transport limits: the dialer opens one bidirectional stream (its
/// direction of the link), so the acceptor allows exactly one. A hub opens
/// one on the connection a private site dialed (the hub's direction), and
/// may open the next while the previous one is being closed, so dialers
/// allow two (a public dialer never accepts any).
fn transport(peer_streams: u32) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("6 s is a valid QUIC idle timeout"),
        ))
        .max_concurrent_bidi_streams(peer_streams.into())
        .max_concurrent_uni_streams(0u32.into());
    Arc::new(transport)
}

/// The accepting side's QUIC config: presents the region's certificate.
pub fn server_config(
    region: &str,
    identity: &Identity,
) -> Result<quinn::ServerConfig, ReplicatorError> {
    let tls_error = |source| ReplicatorError::Tls {
        region: region.to_owned(),
        source,
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(vec![identity.certificate.clone()], identity.key.clone_key())
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    quic_server(region, tls)
}

/// The dialing side's QUIC config for `peer`: trusts exactly the certificate
/// stored in the peer's data directory.
///
/// A missing certificate is [`ReplicatorError::PeerCertificateMissing`], which
/// callers retry: the peer has not started yet.
pub fn client_config(
    peer: &str,
    peer_data_dir: &Path,
) -> Result<quinn::ClientConfig, ReplicatorError> {
    let path = certificate_path(peer_data_dir);
    let certificate = match std::fs::read(&path) {
        Ok(bytes) => CertificateDer::from(bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReplicatorError::PeerCertificateMissing {
                peer: peer.to_owned(),
                path,
            });
        }
        Err(source) => return Err(ReplicatorError::TlsFile { path, source }),
    };
    client_config_trusting(peer, certificate)
}

/// The dialing side's QUIC config trusting exactly `certificate`.
pub fn client_config_trusting(
    peer: &str,
    certificate: CertificateDer<'static>,
) -> Result<quinn::ClientConfig, ReplicatorError> {
    let tls_error = |source| ReplicatorError::Tls {
        region: peer.to_owned(),
        source,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate).map_err(tls_error)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    quic_client(peer, tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reuses_with_a_private_key_file() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let first = load_or_generate("eu-west", data_dir.path()).expect("generate");
        let second = load_or_generate("eu-west", data_dir.path()).expect("reuse");
        assert_eq!(first.certificate, second.certificate);
        let key_path = tls_directory(data_dir.path()).join(KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_path)
                .expect("key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        server_config("eu-west", &first).expect("server config");
        client_config("eu-west", data_dir.path()).expect("client config");
    }

    #[test]
    fn missing_peer_certificate_is_reported_as_such() {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let error = client_config("us-east", data_dir.path()).expect_err("no certificate yet");
        assert!(matches!(
            error,
            ReplicatorError::PeerCertificateMissing { .. }
        ));
    }

    #[test]
    fn server_name_is_per_region() {
        assert_eq!(server_name("ap-south"), "ap-south.replicator.meridian");
    }
}
