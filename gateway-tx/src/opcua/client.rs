//! The async-opcua client of one endpoint: application certificate in the pki directory
//! (created on first start), trust of server certificates, identity and timeouts.

use std::path::Path;

use config::opcua::{Identity, OpcUaEndpoint, SecurityMode, SecurityPolicy, TrustServer};
use opcua::client::{Client, ClientBuilder, IdentityToken};
use opcua::types::{EndpointDescription, MessageSecurityMode};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot create the OPC UA pki directory {dir}: {source}")]
    Pki {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid OPC UA client settings: {0}")]
    Settings(String),
    #[error("cannot load the user certificate or key: {0}")]
    UserCertificate(String),
}

/// The pki layout every OPC UA tool uses: `own/cert.der`, `private/private.pem`, `trusted/`
/// (server certificates an engineer accepted), `rejected/` (unknown ones, refused and saved for
/// the engineer to move to `trusted/`).
pub fn prepare_pki(dir: &Path) -> Result<(), ClientError> {
    for sub in ["own", "private", "trusted", "rejected"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|source| ClientError::Pki {
            dir: d.display().to_string(),
            source,
        })?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let private = dir.join("private");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| ClientError::Pki {
                dir: private.display().to_string(),
                source,
            },
        )?;
    }
    Ok(())
}

/// A client for `ep`, creating its certificate and key in `pki_dir` if absent.
pub fn build(ep: &OpcUaEndpoint) -> Result<Client, ClientError> {
    // An endpoint's live session and its backfill session build clients on the same pki
    // directory; two at once would both create a key pair and one would find the other's
    // half-written (async-opcua then runs without a certificate). One build at a time.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    prepare_pki(&ep.pki_dir)?;
    if ep.trust_server == TrustServer::Any {
        tracing::warn!(
            endpoint = %ep.name,
            "trust_server = \"any\": every server certificate is accepted without checking; \
             anyone on the path can impersonate the server. Use only for commissioning"
        );
    }
    ClientBuilder::new()
        .application_name("gateway-tx")
        .application_uri("urn:gateway-tx")
        .product_uri("urn:gateway-tx")
        .pki_dir(&ep.pki_dir)
        .create_sample_keypair(true)
        .trust_server_certs(ep.trust_server == TrustServer::Any)
        .verify_server_certs(true)
        // Reconnection is the endpoint task's own (it re-resolves namespaces), not the
        // library's.
        .session_retry_limit(0)
        .request_timeout(ep.timeout)
        .publish_timeout(ep.timeout.max(ep.publishing_interval * 3))
        .keep_alive_interval(ep.timeout.min(std::time::Duration::from_secs(5)))
        .max_failed_keep_alive_count(2)
        .session_timeout(60_000)
        // The library's defaults (1000-element arrays, 320 KiB messages) are below what
        // thousands of tags in one Read or publish need; the server's own limits still apply.
        .max_array_length(1_000_000)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_chunk_count(1024)
        // Strings and byte strings up to a whole message: a value too large for the gateway
        // (beyond `protocol::model::MAX_VALUE_BYTES`) is then refused on its own, as that
        // tag's BadEncodingLimitsExceeded (`convert::update`). With the library's 64 KiB
        // limit one such value failed the decoding of its whole publish response or Read,
        // and every other value in it was lost with it.
        .max_string_length(MAX_MESSAGE_BYTES)
        .max_byte_string_length(MAX_MESSAGE_BYTES)
        .session_name(format!("gateway-tx {}", ep.name))
        .client()
        .map_err(|e| ClientError::Settings(e.join("; ")))
}

/// The largest message the client takes from a server (a publish response or Read of
/// thousands of tags, or one large value).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

fn policy(ep: &OpcUaEndpoint) -> opcua::crypto::SecurityPolicy {
    match ep.security_policy {
        SecurityPolicy::None => opcua::crypto::SecurityPolicy::None,
        SecurityPolicy::Basic256Sha256 => opcua::crypto::SecurityPolicy::Basic256Sha256,
        SecurityPolicy::Aes128Sha256RsaOaep => opcua::crypto::SecurityPolicy::Aes128Sha256RsaOaep,
    }
}

fn mode(ep: &OpcUaEndpoint) -> MessageSecurityMode {
    match ep.security_mode {
        SecurityMode::None => MessageSecurityMode::None,
        SecurityMode::Sign => MessageSecurityMode::Sign,
        SecurityMode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    }
}

/// The server's endpoint with the configured security policy and mode, from GetEndpoints on
/// the configured URL, with that URL in place of the one the server advertises: servers behind
/// NAT or a port forward, or advertising a host name the OT network cannot resolve, are
/// reached where the config says.
pub async fn select_endpoint(
    client: &Client,
    ep: &OpcUaEndpoint,
) -> Result<EndpointDescription, String> {
    let (policy, mode) = (policy(ep), mode(ep));
    let offered = client
        .get_server_endpoints_from_url(ep.url.as_str())
        .await
        .map_err(|e| format!("GetEndpoints: {e}"))?;
    let found = offered.iter().find(|e| {
        e.security_mode == mode
            && opcua::crypto::SecurityPolicy::from_uri(e.security_policy_uri.as_ref()) == policy
    });
    let Some(found) = found else {
        let list: Vec<String> = offered
            .iter()
            .map(|e| format!("{} {:?}", e.security_policy_uri, e.security_mode))
            .collect();
        return Err(format!(
            "the server offers no endpoint with security policy {} and mode {:?}; it offers: {}",
            ep.security_policy.uri_name(),
            mode,
            list.join(", ")
        ));
    };
    let mut found = found.clone();
    found.endpoint_url = ep.url.as_str().into();
    Ok(found)
}

pub fn identity(ep: &OpcUaEndpoint) -> Result<IdentityToken, ClientError> {
    Ok(match &ep.identity {
        Identity::Anonymous => IdentityToken::Anonymous,
        Identity::UserName { user, password, .. } => {
            IdentityToken::new_user_name(user.clone(), password.expose().to_owned())
        }
        Identity::Certificate { cert, key } => IdentityToken::new_x509_path(cert, key)
            .map_err(|e| ClientError::UserCertificate(e.to_string()))?,
    })
}
