//! The attacker table: every system test that plays an attack a review found
//! records its row — the finding, what the attacker did, what the attacker
//! got, what the honest clients got — as it measured them. `scripts/test`
//! collects the rows of a run (the file `TINYURL_ATTACKER_TABLE` names) and
//! prints them as one table, sorted by finding, at the end.

use std::io::Write as _;

/// Records one row (and prints it, for a test run on its own). `finding`
/// starts with the finding's label (`H1`, `M4`, `L2`…) so rows sort by it.
pub fn row(finding: &str, attack: &str, attacker_got: &str, honest_got: &str) {
    let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
    let line = format!(
        "| {} | {} | {} | {} |\n",
        cell(finding),
        cell(attack),
        cell(attacker_got),
        cell(honest_got)
    );
    print!("{line}");
    if let Some(path) = std::env::var_os("TINYURL_ATTACKER_TABLE") {
        // One write per row, appended: rows of tests running at once do not
        // interleave.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(error) = written {
            eprintln!("cannot record the attacker row in {path:?}: {error}");
        }
    }
}
