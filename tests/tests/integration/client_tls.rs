//! TLS on the client endpoints (`[client_tls]`, certificates from
//! `meridian certs`): the official Rust (5.0.0), Python (5.1.2) and Node.js
//! (1.0.8) RocketMQ clients and stomp.py (9.0.0) connect with TLS enabled,
//! trusting the deployment CA through their platforms' usual settings
//! (`SSL_CERT_FILE`; `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH` for Python and
//! grpc-js; `ca_certs`), and send and receive across regions (so the
//! routers, replicators and `meridian status` dial the nodes over TLS too);
//! the JSON API answers over HTTPS. Clients that speak plain text to
//! a TLS port are told so (HTTP 400, a STOMP ERROR frame) or closed and
//! logged (gRPC).

use crate::json::Access as _;
use crate::nodejs_client::NodeJs;
use crate::python_client::Python;
use crate::script;
use meridian_tests::{Role, TEST_TOPIC, TestCluster, wait_until};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Writes `request` to `stream` and reads until the server closes.
async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    request: &[u8],
) -> anyhow::Result<String> {
    stream.write_all(request).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut buffer = [0_u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// A TLS connection to `endpoint` (`127.0.0.1:port`) trusting `ca`.
async fn tls_connect(
    ca: &Path,
    endpoint: &str,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca)?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(endpoint).await?;
    let (host, _) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("no port in {endpoint}"))?;
    let name = ServerName::try_from(host.to_owned())?;
    Ok(connector.connect(name, tcp).await?)
}

/// The CA certificate the cluster's client endpoints are signed by.
fn client_ca(cluster: &TestCluster) -> anyhow::Result<std::path::PathBuf> {
    Ok(cluster
        .client_ca()
        .ok_or_else(|| anyhow::anyhow!("the cluster has no client CA"))?
        .to_path_buf())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_clients_over_tls() -> anyhow::Result<()> {
    let python = Python::from_env()?;
    let modules = NodeJs::from_env()?;
    let cluster = TestCluster::builder()
        .regions(2)
        .client_tls()
        .build()
        .await?;
    let ca = client_ca(&cluster)?;
    let python = Python::for_cluster(python, &cluster)?;
    let node = NodeJs::for_cluster(modules, &cluster)?;
    let (router_a, router_b) = (cluster.router_endpoint("a"), cluster.router_endpoint("b"));

    // The Rust client: through a's router, back through b's (the route
    // sends it to the nodes, which it dials with TLS too).
    let examples = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("no target directory"))?
        .join("examples");
    let round_trip = examples.join("demo_round_trip");
    anyhow::ensure!(
        round_trip.is_file(),
        "{} is not built: run `cargo build -p meridian-tests --examples` (scripts/test.sh does)",
        round_trip.display()
    );
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(&round_trip)
            .args(["--tls", "--topic", TEST_TOPIC, &router_a, &router_b, "3"])
            .env("SSL_CERT_FILE", &ca)
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    anyhow::ensure!(
        output.status.success(),
        "the Rust client's round trip over TLS failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // Python sends through a, Node.js receives through b.
    python
        .run(
            "produce.py",
            &script::args([
                "--tls",
                "--endpoints",
                &router_a,
                "--topic",
                TEST_TOPIC,
                "--tag",
                "tls-py",
                "--sizes",
                "64",
            ]),
        )
        .await?
        .succeeded(|_| Ok(()))?;
    node.run(
        "consume.js",
        &script::args([
            "--tls",
            "--endpoints",
            &router_b,
            "--topic",
            TEST_TOPIC,
            "--group",
            "tls-node",
            "--filter",
            "tls-py",
            "--expect",
            "1",
        ]),
    )
    .await?
    .succeeded(|_| Ok(()))?;

    // stomp.py with TLS: every check of the STOMP face but `errors`, which
    // waits for the server to close the connection after an ERROR: stomp.py
    // 9.0.0 reads TLS sockets non-blocking and takes their end of stream
    // for "nothing yet" (transport.py `__read`), so it never sees a close
    // over TLS. The ERROR frame itself is checked below in plain text.
    let stomp = cluster.stomp_endpoint("a");
    let (host, port) = stomp
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("no port in {stomp}"))?;
    let ca_arg = ca.display().to_string();
    python
        .run(
            "stomp_client.py",
            &script::args([
                "--host",
                host,
                "--port",
                port,
                "--topic",
                TEST_TOPIC,
                "--tls-ca",
                &ca_arg,
                "--checks",
                "connect,round_trip,auto_ack,client_individual,client_cumulative,nack,\
                 transactions,topic,heartbeats,authentication",
            ]),
        )
        .await?
        .succeeded(|output| {
            let checks = output.field("checks")?.object()?;
            anyhow::ensure!(checks.len() == 10, "checks run: {:?}", checks.keys());
            Ok(())
        })?;

    // The JSON API over HTTPS.
    let http = cluster.http_endpoint("a");
    let body = r#"{"body":"over https","tag":"tls-json"}"#;
    let answer = exchange(
        tls_connect(&ca, &http).await?,
        format!(
            "POST /v1/topics/{TEST_TOPIC}/messages HTTP/1.1\r\nhost: {http}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    anyhow::ensure!(
        answer.starts_with("HTTP/1.1 201") && answer.contains("message_id"),
        "JSON publish over HTTPS: {answer}"
    );

    // `meridian status` dials the admin ports with the deployment CA.
    let topology = cluster.topology_path().display().to_string();
    let status = cluster
        .run_meridian(["status", "--topology", &topology], Duration::from_secs(60))
        .await?;
    anyhow::ensure!(
        status.status.success() && !status.stdout.contains("down"),
        "meridian status over TLS: {}\n{}",
        status.stdout,
        status.stderr
    );

    // Plain text to TLS ports: the HTTP port, and the admin port, which
    // serves gRPC and the JSON admin API (HTTP/1.1).
    let admin = cluster.admin_endpoint("a");
    for (port, address, path) in [
        ("the HTTPS port", &http, "/v1/openapi.json"),
        ("the admin port", &admin, "/v1/topics"),
    ] {
        let answer = exchange(
            TcpStream::connect(address).await?,
            format!("GET {path} HTTP/1.1\r\nhost: {address}\r\n\r\n").as_bytes(),
        )
        .await?;
        anyhow::ensure!(
            answer.starts_with("HTTP/1.1 400") && answer.contains("takes HTTPS only"),
            "plain HTTP to {port}: {answer}"
        );
    }
    let answer = exchange(
        TcpStream::connect(&stomp).await?,
        b"CONNECT\naccept-version:1.2\nhost:a\n\n\0",
    )
    .await?;
    anyhow::ensure!(
        answer.starts_with("ERROR") && answer.contains("STOMP over TLS only"),
        "plain STOMP to the TLS port: {answer}"
    );
    let plain = crate::support::query_route_of(&cluster.node_endpoint("a"), TEST_TOPIC).await;
    anyhow::ensure!(
        plain.is_err(),
        "a plain-text gRPC client was answered on a TLS port: {plain:?}"
    );
    wait_until(
        Duration::from_secs(10),
        "the node logs the plain-text client",
        || async {
            cluster
                .log("a", Role::Node)
                .contains("the client sent plain text to a TLS port")
        },
    )
    .await?;
    cluster.finish();
    Ok(())
}

/// The round-trip example (`demo_round_trip`) against a deployment with
/// access keys and `[client_tls]`, as the README runs it against
/// `secured.toml`: `--access-key ID` with the secret in `MQ_SECRET_KEY`,
/// `--group PREFIX` for a key whose `sub` grant names its groups, `--tls`
/// with `SSL_CERT_FILE`. `--access-key` without `MQ_SECRET_KEY` is refused
/// before anything is sent, naming the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_trip_example_signs_with_an_access_key_over_tls() -> anyhow::Result<()> {
    let cluster = TestCluster::builder()
        .regions(2)
        .client_tls()
        .access_key_allowing(
            "round-trip-app",
            "round-trip-secret",
            &format!(
                r#"[{{ actions = ["pub"], topics = ["{TEST_TOPIC}"] }},
                    {{ actions = ["sub"], topics = ["{TEST_TOPIC}"], groups = ["billing-*"] }}]"#
            ),
        )
        .build()
        .await?;
    let ca = client_ca(&cluster)?;
    let (router_a, router_b) = (cluster.router_endpoint("a"), cluster.router_endpoint("b"));
    let round_trip = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("no target directory"))?
        .join("examples")
        .join("demo_round_trip");
    anyhow::ensure!(
        round_trip.is_file(),
        "{} is not built: run `cargo build -p meridian-tests --examples` (scripts/test.sh does)",
        round_trip.display()
    );
    let run = |secret: Option<&str>| {
        let mut command = tokio::process::Command::new(&round_trip);
        command
            .args([
                "--tls",
                "--access-key",
                "round-trip-app",
                "--topic",
                TEST_TOPIC,
            ])
            .args(["--group", "billing", &router_a, &router_b, "3"])
            .env("SSL_CERT_FILE", &ca)
            .env("RUST_BACKTRACE", "0")
            .env_remove("MQ_ACCESS_KEY")
            .kill_on_drop(true);
        match secret {
            Some(secret) => command.env("MQ_SECRET_KEY", secret),
            None => command.env_remove("MQ_SECRET_KEY"),
        };
        tokio::time::timeout(Duration::from_secs(120), command.output())
    };

    let output = run(None).await??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        !output.status.success() && stderr.contains("MQ_SECRET_KEY"),
        "--access-key without MQ_SECRET_KEY names the variable: {stderr}"
    );

    let output = run(Some("round-trip-secret")).await??;
    anyhow::ensure!(
        output.status.success(),
        "the Rust client's signed round trip over TLS failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        stdout.contains("received 3 of 3"),
        "every message arrived: {stdout}"
    );
    cluster.finish();
    Ok(())
}
