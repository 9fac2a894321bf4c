//! Custom aliases. They share the code keyspace: one table, one cache key,
//! one lookup. Rules:
//!
//! - 3 to 64 characters of `A-Z a-z 0-9 _ -`, starting with a letter or digit;
//! - case-sensitive, like generated codes (`Sale` and `sale` are different
//!   links), but reserved words are refused in any case;
//! - not a reserved path of the service (`api`, `healthz`, `metrics`, …).

/// Shortest alias.
pub const MIN_ALIAS_LEN: usize = 3;
/// Longest alias.
pub const MAX_ALIAS_LEN: usize = 64;

/// Paths the service or its operators use; refused in any letter case.
pub const RESERVED_ALIASES: &[&str] = &[
    "about",
    "account",
    "admin",
    "api",
    "app",
    "assets",
    "auth",
    // The web console (`/console/`).
    "console",
    // A segment of the REST API's routes (`/api/v1/links/batch`).
    "batch",
    "dashboard",
    "docs",
    "favicon",
    "grpc",
    "health",
    "healthz",
    "help",
    "internal",
    "livez",
    "login",
    "logout",
    "metrics",
    "qr",
    "readyz",
    "robots",
    "settings",
    "signup",
    "static",
    "status",
    "support",
    "www",
];

/// Whether `candidate` has the shape of a link key: a generated code or an
/// alias (`A-Z a-z 0-9 _ -`, 3 to 64 characters, starting with a letter or
/// digit). Reserved words pass: a generated code may spell one. Allocation
/// free, so a request path can be screened before any I/O.
pub fn is_link_shaped(candidate: &str) -> bool {
    let bytes = candidate.as_bytes();
    (MIN_ALIAS_LEN..=MAX_ALIAS_LEN).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-'))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    #[error("alias is {length} characters; it must be {MIN_ALIAS_LEN} to {MAX_ALIAS_LEN}")]
    Length { length: usize },
    #[error("alias contains {character:?}; only letters, digits, '_' and '-' are allowed")]
    Character { character: char },
    #[error("alias must start with a letter or digit")]
    Start,
    #[error("alias {alias:?} is reserved")]
    Reserved { alias: String },
}

/// A validated custom alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Alias(String);

impl Alias {
    pub fn parse(raw: &str) -> Result<Self, AliasError> {
        let length = raw.chars().count();
        if !(MIN_ALIAS_LEN..=MAX_ALIAS_LEN).contains(&length) {
            return Err(AliasError::Length { length });
        }
        if let Some(character) = raw.chars().find(|character| {
            !(character.is_ascii_alphanumeric() || matches!(character, '_' | '-'))
        }) {
            return Err(AliasError::Character { character });
        }
        if !raw.starts_with(|character: char| character.is_ascii_alphanumeric()) {
            return Err(AliasError::Start);
        }
        let lowercase = raw.to_ascii_lowercase();
        if RESERVED_ALIASES.contains(&lowercase.as_str()) {
            return Err(AliasError::Reserved {
                alias: raw.to_owned(),
            });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_shape_matches_alias_and_code_rules() {
        for shaped in ["abc", "Summer-Sale_2026", "0aZ", "metrics", &"x".repeat(64)] {
            assert!(is_link_shaped(shaped), "{shaped:?}");
        }
        for unshaped in [
            "",
            "ab",
            "-abc",
            "_abc",
            "a.b",
            "a/b",
            "abc+",
            "ä12",
            &"x".repeat(65),
        ] {
            assert!(!is_link_shaped(unshaped), "{unshaped:?}");
        }
    }

    #[test]
    fn accepts_documented_aliases() {
        for alias in ["abc", "Summer-Sale_2026", "a1b", &"x".repeat(64)] {
            assert_eq!(Alias::parse(alias).expect(alias).as_str(), alias);
        }
    }

    #[test]
    fn refuses_each_bad_alias_with_its_reason() {
        let too_long = "x".repeat(65);
        let cases: Vec<(&str, AliasError)> = vec![
            ("ab", AliasError::Length { length: 2 }),
            ("", AliasError::Length { length: 0 }),
            (&too_long, AliasError::Length { length: 65 }),
            ("has space", AliasError::Character { character: ' ' }),
            ("slash/no", AliasError::Character { character: '/' }),
            ("plus+", AliasError::Character { character: '+' }),
            ("dot.no", AliasError::Character { character: '.' }),
            ("ünï", AliasError::Character { character: 'ü' }),
            ("-dash", AliasError::Start),
            ("_under", AliasError::Start),
            (
                "api",
                AliasError::Reserved {
                    alias: "api".to_owned(),
                },
            ),
            (
                "HealthZ",
                AliasError::Reserved {
                    alias: "HealthZ".to_owned(),
                },
            ),
            (
                "metrics",
                AliasError::Reserved {
                    alias: "metrics".to_owned(),
                },
            ),
        ];
        for (raw, expected) in cases {
            assert_eq!(Alias::parse(raw), Err(expected), "{raw:?}");
        }
    }
}
