//! `meridian certs`: a development CA and a certificate per region for
//! mutual TLS between replicators (`[replication_tls]` in the topology).
//!
//! Writes, into the output directory (default `certs/` next to the
//! topology file): `ca.pem` and `ca-key.pem`, and for every region
//! `<region>.pem` (its certificate, naming `<region>.replicator.meridian`,
//! for both server and client authentication) and `<region>-key.pem`
//! (PKCS#8). Keys are written with mode 0600. An existing CA is reused, so
//! running it again after adding a region signs only the new region's
//! certificate; existing region files are kept unless `--force`.
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
use std::path::{Path, PathBuf};

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";

/// Makes (or completes) the certificates of `topology`'s regions in
/// `directory`; returns what to tell the user (the files, and the
/// `[replication_tls]` table to put in the topology).
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
        Issuer::new(params, key)
    };
    for region in topology.regions.keys() {
        let cert_path = directory.join(format!("{region}.pem"));
        let key_path = directory.join(format!("{region}-key.pem"));
        if cert_path.exists() && key_path.exists() && !force {
            let _ = writeln!(report, "kept     {}", cert_path.display());
            continue;
        }
        let name = meridian_replicator::server_name(region);
        let mut params = CertificateParams::new(vec![name.clone()])
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
    }
    let _ = writeln!(
        report,
        "\nMutual TLS between replicators: put this in the topology (paths relative to it):\n\n\
         [replication_tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"",
        shown(&ca_path),
        shown(&directory.join("{region}.pem")),
        shown(&directory.join("{region}-key.pem")),
    );
    Ok(report)
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
