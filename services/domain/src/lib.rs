//! Pure domain logic shared by the services: codes, aliases and target URLs.
//! No I/O, no async; everything here is a function of its inputs.

pub mod alias;
pub mod cached;
pub mod clicks;
pub mod codec;
pub mod domains;
pub mod options;
pub mod protect;
pub mod qr;
pub mod status;
pub mod target;
pub mod visitors;

pub use alias::{Alias, AliasError, is_link_shaped};
pub use cached::CachedLink;
pub use codec::{Code, CodeCodec, CodecError};
pub use options::{Device, LinkOptions, RedirectRule, Utm};
pub use status::RedirectStatus;
pub use target::{HostBlocklist, TargetPolicy, TargetUrl, TargetUrlError};
