//! The link service: every rule of creating, reading, changing and listing
//! links — API keys and their scopes, limits and quotas, the host blocklist,
//! validation, minting codes from leased ID ranges, storage and cache
//! coherence — with no transport in it. The writer's gRPC and REST adapters
//! and the `tinyurl` command are its callers.
//!
//! What may import what, inside: `error` and `rate` import nothing of this
//! crate; `input`, `auth`, `leaser`, `limits` and `cache` import only those
//! and `store`; `store` imports `auth` and `error`; `batcher`, `keys`,
//! `blocklist` and `service` sit on top. No module imports a transport.

pub mod admin;
pub mod auth;
pub mod batcher;
pub mod blocklist;
pub mod cache;
mod create;
pub mod error;
pub mod import;
pub mod input;
pub mod keys;
pub mod leaser;
pub mod limits;
pub mod rate;
mod service;
pub mod sessions;
pub mod store;
pub mod webhooks;

pub use self::error::WriterError;
pub use self::service::{
    Call, LinkService, Overview, Page, SearchInput, SearchPage, SignedIn, State, StatsInput,
    link_secret,
};
