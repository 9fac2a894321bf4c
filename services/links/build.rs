//! The migrations are embedded at compile time (refinery's
//! `embed_migrations!`), which cargo does not see: a new or changed file
//! there must rebuild the crate.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=migrations-sqlite");
}
