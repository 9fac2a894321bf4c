//! The rows of a CSV import, as `tinyurl import` and the console's import
//! read them: `url`, then optional `alias` and `expires` (RFC 3339, or a
//! duration from now), by position; a first row starting with `url` is a
//! header. Each row carries an idempotency key derived from its line number
//! and content, so importing the same file again — from either — answers
//! the links the first run created instead of creating them twice.

use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

/// The columns of an export (`tinyurl export`, the console's), the first
/// three those an import reads, so an export imports as it is. `code` and
/// `alias` are the link's path on its `domain` (empty: the default one);
/// `tags` are separated by `|` (a tag cannot hold one).
pub const EXPORT_COLUMNS: [&str; 14] = [
    "url",
    "alias",
    "expires",
    "code",
    "short_url",
    "status",
    "forward_query",
    "enabled",
    "created_at",
    "updated_at",
    "domain",
    "tags",
    "max_visits",
    "password_protected",
];

/// One data row of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    /// 1-based, counting the header.
    pub line: u64,
    pub url: String,
    pub alias: String,
    pub expires: String,
}

impl ImportRow {
    /// Row `line` from its cells (missing cells are empty).
    pub fn of<'a>(line: u64, cells: impl IntoIterator<Item = &'a str>) -> Self {
        let mut cells = cells.into_iter();
        let mut next = || cells.next().unwrap_or_default().to_owned();
        Self {
            line,
            url: next(),
            alias: next(),
            expires: next(),
        }
    }

    /// The header row (`url,…` on the first line).
    pub fn is_header(&self) -> bool {
        self.line == 1 && self.url.eq_ignore_ascii_case("url")
    }

    /// A row with nothing in it, skipped.
    pub fn is_blank(&self) -> bool {
        self.url.is_empty() && self.alias.is_empty() && self.expires.is_empty()
    }

    /// Whether the expiry is a duration from now (so a later run of the
    /// same import asks for a later expiry).
    pub fn expires_relative(&self) -> bool {
        !self.expires.trim().is_empty()
            && humantime::parse_rfc3339_weak(self.expires.trim()).is_err()
    }

    /// The row's expiry, if it has one, or why it is not one.
    pub fn expires_at(&self, now: SystemTime) -> Result<Option<SystemTime>, String> {
        match self.expires.trim() {
            "" => Ok(None),
            text => parse_expiry(text, now).map(Some),
        }
    }

    /// `import-<32 hex>`: the same for the same line and content.
    pub fn idempotency_key(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [
            self.line.to_string().as_str(),
            &self.url,
            &self.alias,
            &self.expires,
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        let digest = hasher.finalize();
        let hex: String = digest[..16]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("import-{hex}")
    }
}

/// An RFC 3339 time, or a duration (`90m`, `12h`, `30d`) from `now`.
pub fn parse_expiry(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let text = text.trim();
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time);
    }
    humantime::parse_duration(text)
        .map(|duration| now + duration)
        .map_err(|_| {
            format!("{text:?} is neither an RFC 3339 time (2027-01-31T12:00:00Z) nor a duration (90m, 12h, 30d)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rows_read_by_position_with_their_key() {
        let row = ImportRow::of(3, ["https://example.com/", "alias-1"]);
        assert_eq!(row.expires, "");
        assert!(!row.is_header() && !row.is_blank());
        assert_eq!(
            row.idempotency_key(),
            ImportRow::of(3, ["https://example.com/", "alias-1", ""]).idempotency_key()
        );
        assert_ne!(
            row.idempotency_key(),
            ImportRow::of(4, ["https://example.com/", "alias-1"]).idempotency_key()
        );
        assert!(row.idempotency_key().starts_with("import-"));
        assert_eq!(row.idempotency_key().len(), "import-".len() + 32);
        assert!(ImportRow::of(1, ["URL", "alias"]).is_header());
        assert!(!ImportRow::of(2, ["url"]).is_header());
        assert!(ImportRow::of(5, ["", "", ""]).is_blank());
    }

    #[test]
    fn expiries_are_times_or_durations_from_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let row = |expires: &str| ImportRow::of(2, ["https://e.example/", "", expires]);
        assert_eq!(row("").expires_at(now), Ok(None));
        assert_eq!(
            row("90m").expires_at(now),
            Ok(Some(now + Duration::from_secs(5_400)))
        );
        assert!(row("90m").expires_relative());
        assert!(!row("2030-01-01T00:00:00Z").expires_relative());
        assert!(row("soon").expires_at(now).is_err());
    }
}
