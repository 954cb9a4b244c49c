//! A throwaway public-key infrastructure for the broker's TLS listeners:
//! a test CA, a broker certificate for `127.0.0.1` and `localhost` signed by
//! it, a client certificate for mutual TLS, and a second CA that nobody
//! trusts (for the "untrusted certificate" test). All PEM files, which both
//! Kafka (`ssl.keystore.type=PEM`) and librdkafka read directly.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// The PEM files of one test PKI, in the broker's directory.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA that signed the broker and client certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing the broker presents.
    pub rogue_ca: PathBuf,
    /// The broker's private key and certificate chain (a PEM keystore).
    pub broker_keystore: PathBuf,
    /// The client certificate for mutual TLS (subject `CN=weir-client`).
    pub client_cert: PathBuf,
    /// Its private key (PKCS#8, unencrypted).
    pub client_key: PathBuf,
    /// A client certificate and key signed by the rogue CA.
    pub rogue_client_cert: PathBuf,
    pub rogue_client_key: PathBuf,
}

/// The subject of the mutual-TLS client certificate.
pub const CLIENT_CN: &str = "weir-client";

impl Pki {
    /// Generates the CA, the certificates and their keys into `dir`.
    pub fn generate(dir: &Path) -> Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let write = |name: &str, text: String| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("{}", path.display()))?;
            Ok(path)
        };
        let ca = issuer("Weir test CA")?;
        let rogue = issuer("Nobody's CA")?;
        let (broker_cert, broker_key) = leaf(
            &ca,
            "127.0.0.1",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (client_cert, client_key) =
            leaf(&ca, CLIENT_CN, &[], ExtendedKeyUsagePurpose::ClientAuth)?;
        let (rogue_cert, rogue_key) =
            leaf(&rogue, CLIENT_CN, &[], ExtendedKeyUsagePurpose::ClientAuth)?;
        Ok(Pki {
            ca: write("ca.pem", ca.pem())?,
            rogue_ca: write("rogue-ca.pem", rogue.pem())?,
            broker_keystore: write(
                "broker.pem",
                format!("{broker_key}{broker_cert}{}", ca.pem()),
            )?,
            client_cert: write("client.pem", client_cert)?,
            client_key: write("client.key", client_key)?,
            rogue_client_cert: write("rogue-client.pem", rogue_cert)?,
            rogue_client_key: write("rogue-client.key", rogue_key)?,
        })
    }
}

/// A self-signed CA.
fn issuer(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

/// A certificate signed by `ca`: (certificate PEM, PKCS#8 key PEM).
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    common_name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}
