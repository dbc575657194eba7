//! `ssl:HOST:PORT` remotes, with OVS's stream-ssl rules: the client shows
//! its certificate, and the server's chain must verify against the CA
//! certificate (no host name check: OVS trusts whatever its CA signed).
//! With `bootstrap_ca_cert` and no CA file yet, the first connection takes
//! the CA certificate at the top of the server's chain, saves it to the CA
//! file and is then dropped; later connections verify against it.
use std::{io::Write, path::PathBuf, pin::Pin};

use openssl::{
    ssl::{Ssl, SslContext, SslFiletype, SslMethod, SslVerifyMode},
    x509::{X509, X509VerifyResult},
};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// The SSL settings ovs-vsctl and the other OVS clients take on the command
/// line (`--private-key`, `--certificate`, `--ca-cert` or
/// `--bootstrap-ca-cert`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SslOptions {
    pub private_key: Option<PathBuf>,
    pub certificate: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    /// `ca_cert` is to be fetched from the server when it does not exist.
    pub bootstrap_ca_cert: bool,
}

/// Connects over TLS on an established TCP connection to `host`.
pub(crate) async fn connect(tcp: TcpStream, host: &str, opts: &SslOptions) -> Result<SslStream<TcpStream>, String> {
    let Some(key) = &opts.private_key else { return Err("Private key must be configured to use SSL".into()) };
    let Some(cert) = &opts.certificate else { return Err("Certificate must be configured to use SSL".into()) };
    let Some(ca) = &opts.ca_cert else { return Err("CA certificate must be configured to use SSL".into()) };
    let ssl_err = |what: &str, e: openssl::error::ErrorStack| format!("{what}: {e}");
    let mut ctx = SslContext::builder(SslMethod::tls_client()).map_err(|e| ssl_err("SSL context", e))?;
    ctx.set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| ssl_err(&format!("{}: could not load private key", key.display()), e))?;
    ctx.set_certificate_chain_file(cert)
        .map_err(|e| ssl_err(&format!("{}: could not load certificate", cert.display()), e))?;
    ctx.check_private_key().map_err(|e| ssl_err("private key does not match certificate", e))?;
    let bootstrapping = opts.bootstrap_ca_cert && !ca.exists();
    if bootstrapping {
        // Nothing to verify against yet: take what the server shows.
        ctx.set_verify(SslVerifyMode::NONE);
    } else {
        ctx.set_ca_file(ca).map_err(|e| ssl_err(&format!("{}: could not read CA certificate", ca.display()), e))?;
        ctx.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    let ctx = ctx.build();
    let mut ssl = Ssl::new(&ctx).map_err(|e| ssl_err("SSL", e))?;
    // Server name indication for names, as OVS does; not for addresses.
    if host.parse::<std::net::IpAddr>().is_err() {
        ssl.set_hostname(host).map_err(|e| ssl_err("SSL server name", e))?;
    }
    let mut stream = SslStream::new(ssl, tcp).map_err(|e| ssl_err("SSL", e))?;
    Pin::new(&mut stream).connect().await.map_err(|e| format!("SSL handshake failed: {e}"))?;
    if bootstrapping {
        bootstrap_ca_cert(&stream, ca)?;
        // As in OVS, the bootstrapping connection itself is not used: the
        // next one verifies the server against the saved certificate.
        return Err(format!("{}: saved CA certificate from the server; reconnect to use it", ca.display()));
    }
    Ok(stream)
}

/// Saves the self-signed certificate at the top of the server's chain as
/// the CA certificate. The file is created only if it does not exist, so
/// that concurrent bootstraps cannot mix two certificates.
fn bootstrap_ca_cert(stream: &SslStream<TcpStream>, ca: &std::path::Path) -> Result<(), String> {
    let chain = stream.ssl().peer_cert_chain().ok_or("server sent no certificate chain")?;
    let top: &openssl::x509::X509Ref = chain.iter().last().ok_or("server sent an empty certificate chain")?;
    if top.issued(top) != X509VerifyResult::OK {
        return Err("server's certificate chain does not end in a self-signed CA certificate; \
                    configure the CA certificate instead of bootstrapping"
            .into());
    }
    let pem = X509::from_der(&top.to_der().map_err(|e| e.to_string())?)
        .and_then(|c| c.to_pem())
        .map_err(|e| format!("could not encode CA certificate: {e}"))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(ca)
        .map_err(|e| format!("{}: could not create CA certificate file ({e})", ca.display()))?;
    f.write_all(&pem).and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", ca.display()))
}
