//! `docs/configuration.md`'s tables, rendered from the services' settings
//! tables, so the document cannot drift from what the binaries read (a test
//! compares them; `TINYURL_WRITE_DOCS=1` rewrites the document).

use std::fmt::Write as _;

use tinyurl_runtime::settings::{Table, render_markdown};

/// Where the generated part of the document starts and ends.
pub const BEGIN: &str = "<!-- settings tables: generated from the services' settings; \
                         TINYURL_WRITE_DOCS=1 cargo test -p tinyurl configuration rewrites them -->";
pub const END: &str = "<!-- end of the generated settings tables -->";

/// The generated part, markers included.
pub fn tables() -> String {
    let services: [(&str, &str, Table); 3] = [
        (
            "idalloc",
            "`tinyurl-idalloc`: the ID range service.",
            tinyurl_idalloc::config::SETTINGS,
        ),
        (
            "writer",
            "`tinyurl-writer`: the link service behind gRPC and the REST API, and the click consumer.",
            tinyurl_writer::settings::SETTINGS,
        ),
        (
            "redirect",
            "`tinyurl-redirect`: the public redirect endpoint.",
            tinyurl_redirect::config::SETTINGS,
        ),
    ];
    let mut out = format!("{BEGIN}\n\n");
    for (name, what, table) in services {
        // Writing to a String cannot fail.
        let _ = write!(out, "### {name}\n\n{what}\n\n{}\n", render_markdown(table));
    }
    let _ = write!(
        out,
        "### every service\n\nRead by each of the three after its own.\n\n{}\n",
        render_markdown(tinyurl_runtime::config::COMMON)
    );
    let names = |table: Table| {
        table
            .iter()
            .map(|setting| format!("`{}`", setting.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        out,
        "### `tinyurl up`\n\n\
         Decides each service's listeners (its flags), the store (`--data`), idalloc's \
         address and token, the base URL (`--public-base-url`) and the trusted proxies \
         (`--trusted-proxies`), and takes from its environment `RUST_LOG`, \
         `TINYURL_CODE_SECRET` (else one generated and kept in the data file), for the \
         writer {}, and for the redirect service {}.\n\n{END}\n",
        names(crate::up::WRITER_SETTINGS),
        names(crate::up::REDIRECT_SETTINGS),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_md_holds_the_settings_tables() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
        let document = std::fs::read_to_string(path).expect("docs/configuration.md");
        let (Some(start), Some(end)) = (document.find(BEGIN), document.find(END)) else {
            panic!("docs/configuration.md has no generated settings tables");
        };
        let current = &document[start..end + END.len()];
        let generated = tables();
        let generated = generated.trim_end();
        if current != generated {
            if std::env::var_os("TINYURL_WRITE_DOCS").is_some() {
                let rewritten = format!(
                    "{}{generated}{}",
                    &document[..start],
                    &document[end + END.len()..]
                );
                std::fs::write(path, rewritten).expect("write docs/configuration.md");
            } else {
                panic!(
                    "docs/configuration.md differs from the settings tables; \
                     rewrite it with TINYURL_WRITE_DOCS=1 cargo test -p tinyurl configuration"
                );
            }
        }
    }

    #[test]
    fn every_setting_is_declared_once_per_service() {
        for table in [
            tinyurl_idalloc::config::SETTINGS,
            tinyurl_writer::settings::SETTINGS,
            tinyurl_redirect::config::SETTINGS,
            tinyurl_runtime::config::COMMON,
        ] {
            let mut names: Vec<&str> = table.iter().map(|setting| setting.name()).collect();
            let all = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), all, "a setting declared twice: {names:?}");
        }
    }
}
