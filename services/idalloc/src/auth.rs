//! Who may lease what. Every caller presents a shared service token
//! (`authorization: Bearer <token>`, one of `TINYURL_IDALLOC_TOKEN`) and may
//! lease only the namespaces on the allow-list (`TINYURL_IDALLOC_NAMESPACES`):
//! a pod that can reach idalloc cannot drain the writers' ID space or create
//! namespaces of its own. With internal TLS, a caller must also present a
//! certificate the internal CA issued.

use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

use crate::error::LeaseError;
use crate::lease::Namespace;

/// Shortest accepted token, in bytes: a random token of this length is not
/// guessable.
pub const MIN_TOKEN_LEN: usize = 32;

#[derive(Debug, Clone)]
pub struct CallerPolicy {
    /// More than one during a rotation: the new token is added, callers move
    /// to it, the old one is removed.
    tokens: Vec<SecretString>,
    namespaces: Vec<Namespace>,
    client_certificate_required: bool,
}

impl CallerPolicy {
    pub fn new(tokens: Vec<SecretString>, namespaces: Vec<Namespace>) -> Self {
        Self {
            tokens,
            namespaces,
            client_certificate_required: false,
        }
    }

    /// Callers must also have presented a certificate from the internal CA
    /// (the TLS handshake verified it).
    pub fn requiring_client_certificates(mut self) -> Self {
        self.client_certificate_required = true;
        self
    }

    /// [`Self::authenticate`], and the client certificate when required.
    pub fn authenticate_request<T>(&self, request: &tonic::Request<T>) -> Result<(), LeaseError> {
        if self.client_certificate_required
            && !request
                .extensions()
                .get::<tinyurl_runtime::tls::TlsConnectInfo>()
                .is_some_and(|info| info.client_certified)
        {
            return Err(LeaseError::Unauthenticated(
                "a client certificate from the internal CA is required",
            ));
        }
        self.authenticate(request.metadata())
    }

    /// Checks the bearer token in `metadata`. Every configured token is
    /// compared in constant time, so the time taken says nothing about how
    /// much of a guess was right.
    pub fn authenticate(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), LeaseError> {
        let presented = metadata
            .get("authorization")
            .ok_or(LeaseError::Unauthenticated(
                "no authorization metadata; send 'authorization: Bearer <service token>'",
            ))?
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or(LeaseError::Unauthenticated(
                "authorization must be 'Bearer <service token>'",
            ))?;
        let mut matched = subtle::Choice::from(0);
        for token in &self.tokens {
            matched |= presented.ct_eq(token.expose_secret().as_bytes());
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(LeaseError::Unauthenticated(
                "the service token is not valid",
            ))
        }
    }

    pub fn allow(&self, namespace: &Namespace) -> Result<(), LeaseError> {
        if self.namespaces.contains(namespace) {
            Ok(())
        } else {
            Err(LeaseError::PermissionDenied(format!(
                "namespace {:?} is not on this server's allow-list",
                namespace.as_str()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CallerPolicy {
        CallerPolicy::new(
            vec![
                SecretString::from("a".repeat(MIN_TOKEN_LEN)),
                SecretString::from("b".repeat(MIN_TOKEN_LEN)),
            ],
            vec![Namespace::parse("links").expect("valid")],
        )
    }

    fn metadata(value: Option<&str>) -> tonic::metadata::MetadataMap {
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Some(value) = value {
            metadata.insert("authorization", value.parse().expect("ascii"));
        }
        metadata
    }

    #[test]
    fn either_token_of_a_rotation_passes() {
        for token in ["a", "b"] {
            let header = format!("Bearer {}", token.repeat(MIN_TOKEN_LEN));
            assert!(policy().authenticate(&metadata(Some(&header))).is_ok());
        }
    }

    #[test]
    fn anything_else_is_unauthenticated() {
        let wrong = format!("Bearer {}", "c".repeat(MIN_TOKEN_LEN));
        let prefix = format!("Bearer {}", "a".repeat(MIN_TOKEN_LEN - 1));
        let bare = "a".repeat(MIN_TOKEN_LEN);
        for value in [
            None,
            Some(wrong.as_str()),
            Some(&prefix),
            Some(&bare),
            Some("Bearer "),
        ] {
            let refused = policy().authenticate(&metadata(value));
            assert!(
                matches!(refused, Err(LeaseError::Unauthenticated(_))),
                "{value:?}"
            );
        }
    }

    #[test]
    fn only_listed_namespaces() {
        let policy = policy();
        assert!(
            policy
                .allow(&Namespace::parse("links").expect("valid"))
                .is_ok()
        );
        let refused = policy.allow(&Namespace::parse("other").expect("valid"));
        assert!(matches!(refused, Err(LeaseError::PermissionDenied(_))));
    }
}
