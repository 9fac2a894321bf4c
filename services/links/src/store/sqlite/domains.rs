//! Short domains in the embedded store.

use super::*;
use crate::store::{Domain, DomainRemoval, DomainStore};

#[async_trait::async_trait]
impl DomainStore for SqliteLinkStore {
    async fn add_domain(&self, domain: &Domain) -> Result<bool, WriterError> {
        let domain = domain.clone();
        self.db
            .run(move |connection| {
                connection.execute(
                    "INSERT INTO domains (host, not_found_url, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                    (
                        &domain.host,
                        &domain.not_found_url,
                        to_micros(domain.created_at),
                    ),
                )
            })
            .await
            .map(|added| added == 1)
            .map_err(WriterError::from_sqlite)
    }

    async fn domains(&self) -> Result<Vec<Domain>, WriterError> {
        self.db
            .run(|connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT host, not_found_url, created_at FROM domains ORDER BY host",
                )?;
                let rows = statement.query_map([], |row| {
                    Ok(Domain {
                        host: row.get(0)?,
                        not_found_url: row.get(1)?,
                        created_at: from_micros(row.get(2)?),
                    })
                })?;
                rows.collect()
            })
            .await
            .map_err(WriterError::from_sqlite)
    }

    async fn remove_domain(&self, host: &str) -> Result<DomainRemoval, WriterError> {
        let host = host.to_owned();
        self.db
            .run(move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let prefix = format!("{host}/");
                let used: bool = transaction.query_row(
                    "SELECT EXISTS (SELECT 1 FROM links
                                    WHERE code >= ?1 AND code < ?1 || char(1114111)
                                      AND target_url IS NOT NULL)",
                    [&prefix],
                    |row| row.get(0),
                )?;
                let outcome = if used {
                    let exists: bool = transaction.query_row(
                        "SELECT EXISTS (SELECT 1 FROM domains WHERE host = ?1)",
                        [&host],
                        |row| row.get(0),
                    )?;
                    if exists {
                        DomainRemoval::HasLinks
                    } else {
                        DomainRemoval::NotFound
                    }
                } else if transaction.execute("DELETE FROM domains WHERE host = ?1", [&host])? == 1
                {
                    DomainRemoval::Removed
                } else {
                    DomainRemoval::NotFound
                };
                transaction.commit()?;
                Ok(outcome)
            })
            .await
            .map_err(WriterError::from_sqlite)
    }
}
