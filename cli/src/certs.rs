//! `meridian certs`: a development CA and a certificate per region for
//! mutual TLS between replicators (`[replication_tls]` in the topology) and
//! for TLS on the region's client endpoints (`[client_tls]`).
//!
//! Writes, into the output directory (default `certs/` next to the
//! topology file): `ca.pem` and `ca-key.pem`, and for every region
//! `<region>.pem` (its certificate, for both server and client
//! authentication, naming `<region>.replicator.meridian`, `localhost`,
//! 127.0.0.1, ::1 and every IP address the region's endpoints listen on
//! but the unspecified ones) and `<region>-key.pem` (PKCS#8). Keys are
//! written with mode 0600; every file, key files included, is listed as
//! created or kept. An existing CA is reused, so running it again after
//! adding a region signs only the new region's certificate; existing region
//! files are kept unless `--force`.
//!
//! Production deployments bring their own CA and PEM files and name them in
//! `[replication_tls]`; this command is for development and tests.

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";

/// Makes (or completes) the certificates of `topology`'s regions in
/// `directory`; returns what to tell the user (every file, certificates and
/// keys, created or kept, and the `[replication_tls]` and `[client_tls]`
/// tables to put in the topology).
pub fn make(
    topology: &meridian_topology::Topology,
    topology_path: &Path,
    directory: &Path,
    force: bool,
) -> anyhow::Result<String> {
    let base = topology_path.parent().unwrap_or_else(|| Path::new("."));
    let shown = |path: &Path| {
        path.strip_prefix(base)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    std::fs::create_dir_all(directory)
        .with_context(|| format!("create {}", directory.display()))?;
    let mut report = String::new();
    let (ca_path, ca_key_path) = (directory.join(CA_CERT), directory.join(CA_KEY));
    let issuer = if ca_path.exists() && ca_key_path.exists() {
        let key = KeyPair::from_pem(&read(&ca_key_path)?)
            .with_context(|| format!("read the CA key {}", ca_key_path.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&read(&ca_path)?, key)
            .with_context(|| format!("read the CA certificate {}", ca_path.display()))?;
        let _ = writeln!(report, "kept     {} (the existing CA)", ca_path.display());
        let _ = writeln!(report, "kept     {} (its key)", ca_key_path.display());
        issuer
    } else {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Meridian deployment CA (development)");
        params.distinguished_name = name;
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let certificate = params.self_signed(&key)?;
        write(&ca_key_path, &key.serialize_pem(), 0o600)?;
        write(&ca_path, &certificate.pem(), 0o644)?;
        let _ = writeln!(report, "created  {}", ca_path.display());
        let _ = writeln!(report, "created  {} (the CA's key)", ca_key_path.display());
        Issuer::new(params, key)
    };
    for region in topology.regions.keys() {
        let cert_path = directory.join(format!("{region}.pem"));
        let key_path = directory.join(format!("{region}-key.pem"));
        if cert_path.exists() && key_path.exists() && !force {
            let _ = writeln!(report, "kept     {}", cert_path.display());
            let _ = writeln!(report, "kept     {}", key_path.display());
            continue;
        }
        let name = meridian_replicator::server_name(region);
        let mut params = CertificateParams::new(subject_names(&name, &topology.regions[region]))
            .with_context(|| format!("a certificate for {name}"))?;
        let mut distinguished = DistinguishedName::new();
        distinguished.push(DnType::CommonName, name);
        params.distinguished_name = distinguished;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &issuer)?;
        write(&key_path, &key.serialize_pem(), 0o600)?;
        write(&cert_path, &certificate.pem(), 0o644)?;
        let _ = writeln!(report, "created  {}", cert_path.display());
        let _ = writeln!(report, "created  {}", key_path.display());
    }
    let files = format!(
        "ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"",
        shown(&ca_path),
        shown(&directory.join("{region}.pem")),
        shown(&directory.join("{region}-key.pem")),
    );
    let _ = writeln!(
        report,
        "\nPut these in the topology (paths relative to it): mutual TLS between \
         replicators,\n\n[replication_tls]\n{files}\n\nand TLS on every client endpoint \
         (clients then need ca.pem in their trust store):\n\n[client_tls]\n{files}"
    );
    Ok(report)
}

/// The names a region's certificate holds: `replicator` (what replicators
/// check), then what clients may dial: `localhost`, the loopback addresses
/// and the IP addresses of the region's endpoints (unspecified ones, which
/// no client dials, left out).
fn subject_names(replicator: &str, region: &meridian_topology::Region) -> Vec<String> {
    let loopback = [
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    ];
    let endpoints = [
        Some(region.node),
        Some(region.admin),
        Some(region.router),
        region.http,
        region.stomp,
    ];
    let mut addresses: Vec<IpAddr> = loopback.to_vec();
    for address in endpoints
        .into_iter()
        .flatten()
        .map(|endpoint| endpoint.ip())
    {
        if !address.is_unspecified() && !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    [replicator.to_owned(), "localhost".to_owned()]
        .into_iter()
        .chain(addresses.iter().map(IpAddr::to_string))
        .collect()
}

/// The default output directory: `certs/` next to the topology file.
pub fn default_directory(topology_path: &Path) -> PathBuf {
    topology_path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("certs")
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

/// Writes `contents` to `path` with `mode` (created that way, so a key is
/// never readable by others, even briefly).
fn write(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
