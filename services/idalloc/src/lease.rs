//! The lease request, parsed once at the edge: past [`LeaseRequest::parse`]
//! nothing re-checks namespaces, counts or request ids.

use crate::error::LeaseError;

/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// Longest request id, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// 1 to 64 characters of `[a-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    pub fn parse(raw: &str) -> Result<Self, LeaseError> {
        if raw.is_empty() {
            return Err(LeaseError::invalid(
                "namespace",
                "namespace must not be empty",
            ));
        }
        if raw.len() > MAX_NAMESPACE_LEN {
            return Err(LeaseError::invalid(
                "namespace",
                format!(
                    "namespace is {} bytes; at most {MAX_NAMESPACE_LEN} allowed",
                    raw.len()
                ),
            ));
        }
        if let Some(bad) = raw.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
        }) {
            return Err(LeaseError::invalid(
                "namespace",
                format!("namespace contains {bad:?}; only a-z, 0-9, '_', '.' and '-' are allowed"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client-chosen idempotency key: 1 to 128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// `Ok(None)` when the client sent none.
    pub fn parse_optional(raw: &str) -> Result<Option<Self>, LeaseError> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.len() > MAX_REQUEST_ID_LEN {
            return Err(LeaseError::invalid(
                "request_id",
                format!(
                    "request_id is {} bytes; at most {MAX_REQUEST_ID_LEN} allowed",
                    raw.len()
                ),
            ));
        }
        if !raw.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(LeaseError::invalid(
                "request_id",
                "request_id must be printable ASCII without spaces",
            ));
        }
        Ok(Some(Self(raw.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    pub namespace: Namespace,
    /// Between 1 and the configured maximum; fits in `i64`.
    pub count: i64,
    pub request_id: Option<RequestId>,
}

impl LeaseRequest {
    pub fn parse(
        namespace: &str,
        count: u64,
        request_id: &str,
        max_count: u64,
    ) -> Result<Self, LeaseError> {
        let namespace = Namespace::parse(namespace)?;
        if count == 0 {
            return Err(LeaseError::invalid("count", "count must be at least 1"));
        }
        if count > max_count {
            return Err(LeaseError::invalid(
                "count",
                format!("count {count} exceeds the maximum lease of {max_count} IDs"),
            ));
        }
        let count = i64::try_from(count)
            .map_err(|_| LeaseError::invalid("count", format!("count {count} is too large")))?;
        Ok(Self {
            namespace,
            count,
            request_id: RequestId::parse_optional(request_id)?,
        })
    }
}

/// A leased half-open range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub start: i64,
    pub end: i64,
    /// The range was leased by an earlier call with the same request id.
    pub replayed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(error: LeaseError) -> &'static str {
        match error {
            LeaseError::InvalidField { field, .. } => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_well_formed_requests() {
        let request = LeaseRequest::parse("links.v1", 1000, "abc-123", 10_000).expect("valid");
        assert_eq!(request.namespace.as_str(), "links.v1");
        assert_eq!(request.count, 1000);
        assert_eq!(
            request.request_id.as_ref().map(RequestId::as_str),
            Some("abc-123")
        );
        let without_id = LeaseRequest::parse("n", 1, "", 10).expect("valid");
        assert_eq!(without_id.request_id, None);
    }

    #[test]
    fn rejects_each_bad_field_by_name() {
        let cases = [
            ("", 1, "", "namespace"),
            ("Links", 1, "", "namespace"),
            ("a b", 1, "", "namespace"),
            (&"x".repeat(65) as &str, 1, "", "namespace"),
            ("links", 0, "", "count"),
            ("links", 10_001, "", "count"),
            ("links", 1, "has space", "request_id"),
            ("links", 1, &"r".repeat(129) as &str, "request_id"),
            ("links", 1, "tab\t", "request_id"),
        ];
        for (namespace, count, request_id, field) in cases {
            let error =
                LeaseRequest::parse(namespace, count, request_id, 10_000).expect_err("must reject");
            assert_eq!(
                field_of(error),
                field,
                "{namespace:?} {count} {request_id:?}"
            );
        }
    }

    #[test]
    fn counts_beyond_i64_are_rejected_not_wrapped() {
        let error = LeaseRequest::parse("links", u64::MAX, "", u64::MAX).expect_err("must reject");
        assert_eq!(field_of(error), "count");
    }
}
