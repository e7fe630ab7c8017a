//! TLS on the client endpoints (`[client_tls]` in the topology): the
//! server side every listener of a region uses ([`ServerTls`],
//! [`ClientStream`]) and the dialing side the deployment's own processes
//! use ([`Dialer`]).
//!
//! A listener with TLS takes only TLS: a client that starts with anything
//! but a TLS handshake record (content type 22, RFC 8446 §5.1) is told so in
//! its protocol where it has one (HTTP 400, a STOMP ERROR frame) and closed.
//! ALPN (RFC 7301) offers `h2` on the gRPC ports (the official clients
//! insist on it), `h2` and `http/1.1` on the admin port (gRPC and the JSON
//! admin API), `http/1.1` on the HTTP port and nothing on STOMP. TLS 1.2 and
//! 1.3, rustls with the ring provider, passed explicitly.

use meridian_topology::{TlsFiles, Topology};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The first byte of every TLS connection: a handshake record (RFC 8446
/// §5.1, `ContentType.handshake`).
pub const HANDSHAKE_RECORD: u8 = 22;

/// Why TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    // The cause is part of each message (callers print one line) and not a
    // `source`, so that error chains (`anyhow`'s `{:#}`) do not repeat it.
    #[error("TLS file {}: {cause}", path.display())]
    Pem {
        path: PathBuf,
        cause: rustls::pki_types::pem::Error,
    },
    #[error("TLS certificate file {} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("TLS certificate {} with key {}: {cause}", cert.display(), key.display())]
    Config {
        cert: PathBuf,
        key: PathBuf,
        cause: rustls::Error,
    },
    #[error("TLS CA file {}: {cause}", path.display())]
    Ca { path: PathBuf, cause: io::Error },
}

/// Which application protocols a TLS listener offers in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2`: the RocketMQ gRPC ports of node and router.
    Grpc,
    /// `h2` and `http/1.1`: the admin port (gRPC and the JSON admin API).
    GrpcAndHttp1,
    /// `http/1.1`: the HTTP port (Aliyun MQ HTTP API and JSON REST).
    Http1,
    /// None: STOMP.
    None,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::Grpc => vec![b"h2".to_vec()],
            Alpn::GrpcAndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::None => Vec::new(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A listener's TLS: its certificate chain and key.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ServerTls")
    }
}

impl ServerTls {
    /// Reads a certificate chain and its private key (PEM; PKCS#8, PKCS#1 or
    /// SEC1 key); offers no ALPN protocol until [`ServerTls::with_alpn`].
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        fn pem(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError + '_ {
            move |cause| TlsError::Pem {
                path: path.to_owned(),
                cause,
            }
        }
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(pem(cert))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem(cert))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert.to_owned(),
            });
        }
        let private_key = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
        let config_error = |cause| TlsError::Config {
            cert: cert.to_owned(),
            key: key.to_owned(),
            cause,
        };
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(config_error)?;
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    /// The same certificate, offering `alpn`.
    pub fn with_alpn(&self, alpn: Alpn) -> Self {
        let mut config = (*self.config).clone();
        config.alpn_protocols = alpn.protocols();
        ServerTls {
            config: Arc::new(config),
        }
    }

    /// `region`'s listener TLS from the topology's `[client_tls]`, `None`
    /// when the topology has none.
    pub fn of_topology(topology: &Topology, region: &str) -> Result<Option<Self>, TlsError> {
        topology
            .client_tls
            .as_ref()
            .map(|files: &TlsFiles| {
                ServerTls::load(&files.cert_path(region), &files.key_path(region))
            })
            .transpose()
    }

    /// Runs the server side of the handshake on `stream`.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<ClientStream> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config));
        let stream = acceptor.accept(stream).await?;
        Ok(ClientStream::Tls(Box::new(stream)))
    }
}

/// Whether a client's first byte starts a TLS handshake; `Ok(None)` if it
/// closed before sending anything. Waits for the byte without taking it.
pub async fn starts_with_handshake(stream: &TcpStream) -> io::Result<Option<bool>> {
    let mut first = [0_u8; 1];
    let read = stream.peek(&mut first).await?;
    Ok((read > 0).then_some(first[0] == HANDSHAKE_RECORD))
}

/// A client connection, with or without TLS.
#[derive(Debug)]
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ClientStream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(stream) => stream,
            ClientStream::Tls(stream) => stream.get_ref().0,
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_read(context, buffer),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(context, buffer),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_write(context, buffer),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(context, buffer),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_write_vectored(context, buffers),
            ClientStream::Tls(stream) => {
                Pin::new(stream.as_mut()).poll_write_vectored(context, buffers)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(stream) => stream.is_write_vectored(),
            ClientStream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_flush(context),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(context),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_shutdown(context),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(context),
        }
    }
}

/// How the deployment's own processes dial client endpoints (node, admin,
/// router): plain `http://`, or `https://` trusting the deployment CA of
/// `[client_tls]`, checking that the certificate names the address dialed.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Dialer {
    /// Plain TCP.
    pub fn plain() -> Self {
        Dialer::default()
    }

    /// TLS trusting the CA certificates (PEM) in `ca`.
    pub fn trusting(ca: &Path) -> Result<Self, TlsError> {
        let pem = std::fs::read(ca).map_err(|cause| TlsError::Ca {
            path: ca.to_owned(),
            cause,
        })?;
        let certificate = tonic::transport::Certificate::from_pem(pem);
        Ok(Dialer {
            tls: Some(tonic::transport::ClientTlsConfig::new().ca_certificate(certificate)),
        })
    }

    /// What `[client_tls]` in `topology` asks for: TLS trusting its `ca`,
    /// or plain TCP when the section is absent.
    pub fn of_topology(topology: &Topology) -> Result<Self, TlsError> {
        match &topology.client_tls {
            Some(files) => Dialer::trusting(&files.ca),
            None => Ok(Dialer::plain()),
        }
    }

    /// Whether endpoints are dialed with TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }

    /// A gRPC endpoint for `address` (`host:port`), not yet connected.
    pub fn endpoint(
        &self,
        address: impl fmt::Display,
    ) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("{}://{address}", self.scheme()))?;
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone()),
            None => Ok(endpoint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// A self-signed certificate for 127.0.0.1 in `directory`: (cert, key).
    fn certificate(directory: &Path) -> (PathBuf, PathBuf) {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("a certificate");
        let (cert, key) = (directory.join("cert.pem"), directory.join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).expect("write the certificate");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write the key");
        (cert, key)
    }

    fn client_config(cert: &Path) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(cert).expect("read the certificate"))
            .expect("a root");
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    #[tokio::test]
    async fn a_tls_client_talks_and_a_plain_one_is_refused() {
        let directory = tempfile::tempdir().expect("a temp dir");
        let (cert, key) = certificate(directory.path());
        let tls = ServerTls::load(&cert, &key)
            .expect("load")
            .with_alpn(Alpn::Grpc);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (stream, _) = listener.accept().await.expect("accept");
                match starts_with_handshake(&stream).await.expect("peek") {
                    Some(true) => {
                        let mut stream = tls.accept(stream).await.expect("handshake");
                        assert!(matches!(stream, ClientStream::Tls(_)));
                        let mut word = [0; 4];
                        stream.read_exact(&mut word).await.expect("read");
                        stream.write_all(&word).await.expect("write");
                        stream.shutdown().await.expect("shutdown");
                    }
                    other => assert_eq!(other, Some(false), "the plain client's first byte"),
                }
            }
        });
        let connector = tokio_rustls::TlsConnector::from(client_config(&cert));
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let name = ServerName::try_from("127.0.0.1").expect("a name");
        let mut client = connector
            .connect(name, tcp)
            .await
            .expect("client handshake");
        assert_eq!(
            client.get_ref().1.alpn_protocol(),
            None,
            "the client offered none"
        );
        client.write_all(b"ping").await.expect("write");
        let mut echoed = Vec::new();
        client.read_to_end(&mut echoed).await.expect("read");
        assert_eq!(echoed, b"ping");
        let mut plain = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        plain.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
        server.await.expect("the server task");
    }

    #[test]
    fn unreadable_files_are_named() {
        let directory = tempfile::tempdir().expect("a temp dir");
        let missing = directory.path().join("missing.pem");
        let error = ServerTls::load(&missing, &missing).expect_err("no such file");
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let empty = directory.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let error = ServerTls::load(&empty, &missing).expect_err("no certificate");
        assert!(
            error.to_string().contains("holds no certificate"),
            "{error}"
        );
        let error = Dialer::trusting(&missing).expect_err("no CA file");
        assert!(error.to_string().contains("missing.pem"), "{error}");
        let (cert, _) = certificate(directory.path());
        let error = ServerTls::load(&cert, &cert).expect_err("a certificate is no key");
        assert!(error.to_string().contains("cert.pem"), "{error}");
    }

    #[test]
    fn the_dialer_picks_the_scheme() {
        let plain = Dialer::plain()
            .endpoint("127.0.0.1:1")
            .expect("an endpoint");
        assert_eq!(plain.uri().scheme_str(), Some("http"));
        let directory = tempfile::tempdir().expect("a temp dir");
        let (cert, _) = certificate(directory.path());
        let dialer = Dialer::trusting(&cert).expect("a CA");
        assert!(dialer.is_tls());
        let tls = dialer.endpoint("127.0.0.1:1").expect("an endpoint");
        assert_eq!(tls.uri().scheme_str(), Some("https"));
    }
}
