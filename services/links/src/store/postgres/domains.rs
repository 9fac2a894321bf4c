//! Short domains in the Postgres store.

use super::*;
use crate::store::{Domain, DomainRemoval, DomainStore};

#[async_trait::async_trait]
impl DomainStore for PostgresLinkStore {
    async fn add_domain(&self, domain: &Domain) -> Result<bool, WriterError> {
        self.bounded(async {
            let added = self
                .client()
                .await?
                .execute(
                    "INSERT INTO domains (host, not_found_url, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[&domain.host, &domain.not_found_url, &domain.created_at],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            Ok(added == 1)
        })
        .await
    }

    async fn domains(&self) -> Result<Vec<Domain>, WriterError> {
        self.bounded(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT host, not_found_url, created_at FROM domains ORDER BY host",
                    &[],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            rows.iter()
                .map(|row| {
                    Ok(Domain {
                        host: row.try_get(0)?,
                        not_found_url: row.try_get(1)?,
                        created_at: row.try_get(2)?,
                    })
                })
                .collect::<Result<_, tokio_postgres::Error>>()
                .map_err(WriterError::from_postgres)
        })
        .await
    }

    async fn remove_domain(&self, host: &str) -> Result<DomainRemoval, WriterError> {
        self.bounded(async {
            // Its links are keyed `{host}/…`: a prefix of the primary key
            // (COLLATE "C"), one index probe per partition.
            let prefix = format!("{host}/");
            let row = self
                .client()
                .await?
                .query_one(
                    "WITH used AS (
                         SELECT EXISTS (SELECT 1 FROM links
                                        WHERE code >= $2 AND code < $2 || chr(1114111)
                                          AND target_url IS NOT NULL) AS used
                     ), removed AS (
                         DELETE FROM domains WHERE host = $1 AND NOT (SELECT used FROM used)
                         RETURNING host
                     )
                     SELECT (SELECT used FROM used),
                            EXISTS (SELECT 1 FROM removed),
                            EXISTS (SELECT 1 FROM domains WHERE host = $1)",
                    &[&host, &prefix],
                )
                .await
                .map_err(WriterError::from_postgres)?;
            let read = || -> Result<(bool, bool, bool), tokio_postgres::Error> {
                Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
            };
            Ok(match read().map_err(WriterError::from_postgres)? {
                (_, true, _) => DomainRemoval::Removed,
                (true, false, true) => DomainRemoval::HasLinks,
                _ => DomainRemoval::NotFound,
            })
        })
        .await
    }
}
