//! The data file of `tinyurl up`: opened with modes only its owner can
//! read, its code key kept with it, and the first API key made on the first
//! start — shown on a terminal, else written to a file beside the data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;
use tinyurl_links::store::{KeyStore as _, SqliteLinkStore};
use tinyurl_runtime::Env;
use tinyurl_writer::settings::CODE_SECRET;

/// The data file, opened: its store, its code key, and the first API key
/// when this start made it.
pub(super) struct Data {
    pub(super) store: Arc<SqliteLinkStore>,
    pub(super) code_secret: SecretString,
    pub(super) first_key: Option<FirstKey>,
}

impl Data {
    pub(super) async fn open(path: &Path, process_env: &Env) -> anyhow::Result<Self> {
        secure_data_file(path)?;
        let store = Arc::new(
            SqliteLinkStore::open(path, Duration::from_secs(5))
                .await
                .with_context(|| format!("cannot open {}", path.display()))?
                .with_idempotency_retention(
                    tinyurl_writer::config::layout_from_env(process_env)?.idempotency_retention,
                ),
        );
        // The code permutation key is generated once and kept with the
        // data: a new key would mint codes that collide with existing ones.
        let code_secret = match process_env.get(CODE_SECRET.name) {
            Some(_) => process_env.read(&CODE_SECRET)?,
            None => SecretString::from(
                store
                    .setting_or_insert("code_secret", || {
                        format!(
                            "{}{}",
                            uuid::Uuid::new_v4().simple(),
                            uuid::Uuid::new_v4().simple()
                        )
                    })
                    .await
                    .context("cannot read the code key")?,
            ),
        };
        let first_key = if store.count_api_keys().await? == 0 {
            Some(first_api_key(store.as_ref(), path).await?)
        } else {
            None
        };
        Ok(Self {
            store,
            code_secret,
            first_key,
        })
    }
}

/// Where the first API key goes when it cannot be shown: beside the data.
fn key_file(data: &Path) -> PathBuf {
    beside(data, ".api-key")
}

/// The data file's path with `suffix` appended (`tinyurl.db-wal`).
fn beside(data: &Path, suffix: &str) -> PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The data holds the code permutation key and the API key hashes: its
/// directory, when `up` creates it, is 0700 and the database 0600 (SQLite
/// gives its `-wal` and `-shm` files the database's mode). An existing file
/// readable by others is tightened.
fn secure_data_file(data: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    if let Some(parent) = data
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(data)
        .with_context(|| format!("cannot create {}", data.display()))?;
    for suffix in ["", "-wal", "-shm"] {
        let path = beside(data, suffix);
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        if metadata.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make {} private", path.display()))?;
            tracing::info!(path = %path.display(), "made the data file readable by its owner only");
        }
    }
    Ok(())
}

/// Where the first API key went.
pub(super) enum FirstKey {
    /// To a terminal, printed with the banner.
    Shown(String),
    /// To this file, mode 0600.
    Written(PathBuf),
}

/// Creates the first API key. On a terminal a person reads it; anywhere
/// else (a container, a service manager) standard output ends up in a log,
/// so the key goes to a file beside the data only its owner can read. The
/// file is made before the key, so a file that cannot be made costs no key;
/// a key that then cannot be written is revoked (nobody knows it) and the
/// error says how to make another.
async fn first_api_key(
    store: &dyn tinyurl_links::store::LinkStore,
    data: &Path,
) -> anyhow::Result<FirstKey> {
    use std::io::Write as _;
    let file = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        None
    } else {
        let path = key_file(data);
        let file = create_private(&path)
            .with_context(|| format!("cannot create {} for the first API key", path.display()))?;
        Some((path, file))
    };
    let name = tinyurl_links::auth::KeyName::parse("first key (tinyurl up)")?;
    // The operator's key: it also manages keys and the blocklist in the
    // web console.
    let issued =
        tinyurl_links::keys::issue_key(store, &name, tinyurl_links::auth::Scope::Admin, None)
            .await
            .context("cannot create the first API key")?;
    let Some((path, mut file)) = file else {
        return Ok(FirstKey::Shown(issued.key));
    };
    let written = file
        .write_all(format!("{}\n", issued.key).as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(error) = written {
        let _ = store.revoke_api_key(issued.id).await;
        let _ = std::fs::remove_file(&path);
        return Err(error).with_context(|| {
            format!(
                "cannot write the first API key to {}; it was revoked: make another with `tinyurl api-key create --name NAME --database-url sqlite:{}`",
                path.display(),
                data.display()
            )
        });
    }
    Ok(FirstKey::Written(path))
}

/// A new file at `path`, mode 0600, that no one else had open: whatever
/// was at `path` (an old key file, a symbolic link planted there) is
/// removed, not followed, and the file is created exclusively (`O_EXCL`
/// fails on a link put back in between).
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}
