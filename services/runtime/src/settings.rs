//! One table of settings per service. Each setting is declared once — its
//! variable, what it means, its default and how its value is read — and
//! everything else comes from that declaration: the typed configuration
//! reads it ([`Env::read`]), `--help` and `docs/configuration.md` render it
//! ([`render_help`], [`render_markdown`]), so a default is written in one
//! place. The environment is passed in as a map ([`Env`]), so tests build
//! any configuration without touching process state.

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use std::collections::HashMap;

use secrecy::SecretString;

/// The environment a service is configured from.
#[derive(Debug, Clone, Default)]
pub struct Env {
    variables: HashMap<String, String>,
}

/// A variable that is set but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

impl Env {
    /// The environment of this process.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars())
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            variables: pairs
                .into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
        }
    }

    /// The value of `name`, treating an empty value as unset (as shells and
    /// compose files commonly produce `VAR=` for "not configured").
    pub fn get(&self, name: &str) -> Option<&str> {
        self.variables
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.trim().is_empty())
    }
}

/// What a setting is when its variable is unset (or empty).
pub enum Fallback<T> {
    /// Nothing: the service refuses to start without it.
    Required,
    /// This value, documented as it is shown.
    Value(T),
    /// The value this text is read as, documented as written (for values
    /// that cannot be built in a `const`, like lists).
    Text(&'static str),
    /// This value, documented by the words given (`None` of an optional
    /// setting: "unset: no cache writes").
    Said(T, &'static str),
}

/// One setting of the environment contract.
pub struct Setting<T: 'static> {
    pub name: &'static str,
    pub meaning: &'static str,
    pub default: Fallback<T>,
    /// Reads a set value; the error says why it cannot be used.
    pub parse: fn(&str) -> Result<T, String>,
    /// Writes a default value as a user would set it.
    pub show: fn(&T) -> String,
}

impl<T: Clone> Setting<T> {
    /// The value of this setting in `env`.
    pub fn read(&self, env: &Env) -> Result<T, ConfigError> {
        match env.get(self.name) {
            Some(raw) => (self.parse)(raw.trim()).map_err(|reason| ConfigError {
                variable: self.name,
                reason,
            }),
            None => match &self.default {
                Fallback::Required => Err(ConfigError {
                    variable: self.name,
                    reason: "must be set".to_owned(),
                }),
                Fallback::Value(value) | Fallback::Said(value, _) => Ok(value.clone()),
                Fallback::Text(text) => (self.parse)(text).map_err(|reason| ConfigError {
                    variable: self.name,
                    reason: format!("the default {text:?} is wrong: {reason}"),
                }),
            },
        }
    }
}

impl<T> Setting<T>
where
    T: FromStr + std::fmt::Display + 'static,
    T::Err: std::fmt::Display,
{
    /// A setting read with `FromStr`, whose default is `default`.
    pub const fn value(name: &'static str, default: T, meaning: &'static str) -> Self {
        Self {
            name,
            meaning,
            default: Fallback::Value(default),
            parse: parsed::<T>,
            show: show::<T>,
        }
    }
}

impl<T> Setting<Option<T>>
where
    T: FromStr + 'static,
    T::Err: std::fmt::Display,
{
    /// An optional setting read with `FromStr`; `unset` says what leaving
    /// it unset means.
    pub const fn optional(name: &'static str, unset: &'static str, meaning: &'static str) -> Self {
        Self {
            name,
            meaning,
            default: Fallback::Said(None, unset),
            parse: parsed_some::<T>,
            show: unshown,
        }
    }
}

impl Setting<Duration> {
    /// A duration written in milliseconds (`TINYURL_*_MS`).
    pub const fn millis(name: &'static str, default: Duration, meaning: &'static str) -> Self {
        Self {
            name,
            meaning,
            default: Fallback::Value(default),
            parse: millis,
            show: show_millis,
        }
    }

    /// A duration written in seconds (`TINYURL_*_SECS`).
    pub const fn seconds(name: &'static str, default: Duration, meaning: &'static str) -> Self {
        Self {
            name,
            meaning,
            default: Fallback::Value(default),
            parse: seconds,
            show: show_seconds,
        }
    }

    /// A duration written for people (`7d`, `24h`).
    pub const fn human(name: &'static str, default: Duration, meaning: &'static str) -> Self {
        Self {
            name,
            meaning,
            default: Fallback::Value(default),
            parse: human_duration,
            show: show_human,
        }
    }
}

impl Setting<SecretString> {
    /// A secret the service cannot start without.
    pub const fn required_secret(name: &'static str, meaning: &'static str) -> Self {
        Self {
            name,
            meaning,
            default: Fallback::Required,
            parse: secret,
            show: unshown,
        }
    }
}

impl Setting<Option<SecretString>> {
    /// An optional secret; `unset` says what leaving it unset means.
    pub const fn optional_secret(
        name: &'static str,
        unset: &'static str,
        meaning: &'static str,
    ) -> Self {
        Self {
            name,
            meaning,
            default: Fallback::Said(None, unset),
            parse: secret_some,
            show: unshown,
        }
    }
}

/// A setting as its documentation sees it, whatever its type.
pub trait Described: Sync {
    fn name(&self) -> &'static str;
    fn meaning(&self) -> &'static str;
    /// The default as documented: a value, "(required)", or what unset means.
    fn default_text(&self) -> String;
}

impl<T: Sync> Described for Setting<T> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn meaning(&self) -> &'static str {
        self.meaning
    }

    fn default_text(&self) -> String {
        match &self.default {
            Fallback::Required => "(required)".to_owned(),
            Fallback::Value(value) => (self.show)(value),
            Fallback::Text(text) => (*text).to_owned(),
            Fallback::Said(_, words) => format!("({words})"),
        }
    }
}

/// A service's settings, in the order its documentation lists them.
pub type Table = &'static [&'static dyn Described];

impl Env {
    /// The value of `setting` here.
    pub fn read<T: Clone>(&self, setting: &Setting<T>) -> Result<T, ConfigError> {
        setting.read(self)
    }
}

/// The "Environment" section of a binary's `--help`.
pub fn render_help(tables: &[Table]) -> String {
    let width = tables
        .iter()
        .flat_map(|table| table.iter())
        .map(|setting| setting.name().len())
        .max()
        .unwrap_or(0);
    let mut help = String::from("Environment:\n");
    for setting in tables.iter().flat_map(|table| table.iter()) {
        // Writing to a String cannot fail.
        let _ = writeln!(
            help,
            "  {:width$}  {} [default: {}]",
            setting.name(),
            setting.meaning(),
            setting.default_text()
        );
    }
    help
}

/// A table as the Markdown of `docs/configuration.md`.
pub fn render_markdown(table: Table) -> String {
    let mut markdown = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for setting in table {
        let default = setting.default_text();
        let default = match default.strip_prefix('(').and_then(|d| d.strip_suffix(')')) {
            Some(words) => words.to_owned(),
            None => format!("`{default}`"),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            markdown,
            "| `{}` | {} | {} |",
            setting.name(),
            default.replace('|', "\\|"),
            setting.meaning().replace('|', "\\|")
        );
    }
    markdown
}

// Parsers and printers the tables share. Each is a plain function, so a
// setting can be a `const`.

/// Any `FromStr` value.
pub fn parsed<T: FromStr>(raw: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    raw.parse()
        .map_err(|error: T::Err| format!("cannot parse {raw:?}: {error}"))
}

/// Any `FromStr` value, of an optional setting.
pub fn parsed_some<T: FromStr>(raw: &str) -> Result<Option<T>, String>
where
    T::Err: std::fmt::Display,
{
    parsed(raw).map(Some)
}

/// A whole number that must be at least 1.
pub fn positive<T: FromStr + PartialEq + Default>(raw: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    let value: T = parsed(raw)?;
    if value == T::default() {
        return Err("must be at least 1".to_owned());
    }
    Ok(value)
}

/// The value as it is written.
pub fn text(raw: &str) -> Result<String, String> {
    Ok(raw.to_owned())
}

/// The value as it is written, of an optional setting.
pub fn text_some(raw: &str) -> Result<Option<String>, String> {
    Ok(Some(raw.to_owned()))
}

/// A value that must never be printed (passwords, keys, URLs with
/// credentials).
pub fn secret(raw: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(raw.to_owned()))
}

/// A secret of an optional setting.
pub fn secret_some(raw: &str) -> Result<Option<SecretString>, String> {
    secret(raw).map(Some)
}

/// A duration in milliseconds (`TINYURL_*_MS`).
pub fn millis(raw: &str) -> Result<Duration, String> {
    parsed::<u64>(raw).map(Duration::from_millis)
}

/// A duration in seconds (`TINYURL_*_SECS`).
pub fn seconds(raw: &str) -> Result<Duration, String> {
    parsed::<u64>(raw).map(Duration::from_secs)
}

/// A duration written for people (`7d`, `24h`, `90s`).
pub fn human_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|error| format!("cannot parse {raw:?}: {error}"))
}

pub fn show<T: std::fmt::Display>(value: &T) -> String {
    value.to_string()
}

pub fn show_millis(value: &Duration) -> String {
    value.as_millis().to_string()
}

pub fn show_seconds(value: &Duration) -> String {
    value.as_secs().to_string()
}

pub fn show_human(value: &Duration) -> String {
    humantime::format_duration(*value).to_string()
}

/// For settings whose default is always [`Fallback::Said`] or required.
pub fn unshown<T>(_: &T) -> String {
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Setting<u32> = Setting {
        name: "TINYURL_TEST_LIMIT",
        meaning: "a limit",
        default: Fallback::Value(20),
        parse: positive,
        show,
    };

    const TOKEN: Setting<SecretString> = Setting {
        name: "TINYURL_TEST_TOKEN",
        meaning: "a token",
        default: Fallback::Required,
        parse: secret,
        show: unshown,
    };

    const CACHE: Setting<Option<String>> = Setting {
        name: "TINYURL_TEST_CACHE",
        meaning: "a cache",
        default: Fallback::Said(None, "unset: no cache"),
        parse: text_some,
        show: unshown,
    };

    #[test]
    fn a_setting_reads_its_value_its_default_or_says_what_is_wrong() {
        let empty = Env::default();
        assert_eq!(empty.read(&LIMIT).ok(), Some(20));
        assert_eq!(empty.read(&CACHE).ok(), Some(None));
        let missing = empty.read(&TOKEN).expect_err("required");
        assert_eq!(
            missing.to_string(),
            "invalid TINYURL_TEST_TOKEN: must be set"
        );

        let set = Env::from_pairs([("TINYURL_TEST_LIMIT", " 7 "), ("TINYURL_TEST_CACHE", "x")]);
        assert_eq!(set.read(&LIMIT).ok(), Some(7));
        assert_eq!(set.read(&CACHE).ok(), Some(Some("x".to_owned())));
        let zero = Env::from_pairs([("TINYURL_TEST_LIMIT", "0")]);
        assert_eq!(
            zero.read(&LIMIT).map_err(|error| error.to_string()),
            Err("invalid TINYURL_TEST_LIMIT: must be at least 1".to_owned())
        );
    }

    #[test]
    fn help_and_markdown_come_from_the_same_declaration() {
        const TABLE: Table = &[&LIMIT, &TOKEN, &CACHE];
        let help = render_help(&[TABLE]);
        assert!(
            help.contains("TINYURL_TEST_LIMIT  a limit [default: 20]"),
            "{help}"
        );
        assert!(help.contains("a token [default: (required)]"), "{help}");
        assert!(
            help.contains("a cache [default: (unset: no cache)]"),
            "{help}"
        );
        let markdown = render_markdown(TABLE);
        assert!(
            markdown.contains("| `TINYURL_TEST_LIMIT` | `20` | a limit |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| `TINYURL_TEST_TOKEN` | required | a token |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| `TINYURL_TEST_CACHE` | unset: no cache | a cache |"),
            "{markdown}"
        );
    }

    #[test]
    fn durations_read_and_show_alike() {
        assert_eq!(millis("250"), Ok(Duration::from_millis(250)));
        assert_eq!(show_millis(&Duration::from_millis(250)), "250");
        assert_eq!(human_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(show_human(&Duration::from_secs(7 * 86_400)), "7days");
        assert!(millis("-1").is_err());
    }
}
