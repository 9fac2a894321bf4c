//! The ID leaser against a real idalloc in this process: IDs are never
//! handed out twice, ranges are refilled before they run out, and a leaser
//! whose idalloc is gone serves what it holds, then says UNAVAILABLE.

use std::collections::HashSet;
use std::time::Duration;

use tinyurl_links::WriterError;
use tinyurl_links::leaser::IdLeaser;

mod common;
use common::{Scratch, idalloc, token};

fn leaser(address: std::net::SocketAddr, call_timeout: Duration) -> anyhow::Result<IdLeaser> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{address}"))?.connect_lazy();
    IdLeaser::new(channel, &token(), call_timeout, Duration::from_secs(30))
}

#[tokio::test]
async fn two_leasers_never_hand_out_one_id_twice() -> anyhow::Result<()> {
    let dir = Scratch::new("leaser")?;
    let (address, _stop) = idalloc(&dir.0).await?;
    let writers = [
        leaser(address, Duration::from_secs(5))?,
        leaser(address, Duration::from_secs(5))?,
    ];
    let mut seen = HashSet::new();
    // Past the smallest range (10,000), so each leaser refills on the way.
    for round in 0..30 {
        for writer in &writers {
            let ids = writer
                .take(1_000)
                .await
                .map_err(|error| anyhow::anyhow!("round {round}: {error}"))?;
            assert_eq!(ids.len(), 1_000);
            for id in ids {
                assert!(seen.insert(id), "id {id} handed out twice");
            }
        }
    }
    assert_eq!(seen.len(), 60_000);
    Ok(())
}

#[tokio::test]
async fn without_idalloc_the_buffer_serves_then_creates_are_unavailable() -> anyhow::Result<()> {
    let dir = Scratch::new("leaser")?;
    let (address, stop) = idalloc(&dir.0).await?;
    let writer = leaser(address, Duration::from_millis(300))?;
    writer
        .prime()
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let held = writer.buffered();
    assert!(held >= 10_000, "primed with {held}");
    stop.stop().await?;

    let ids = writer
        .take(usize::try_from(held)?)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    assert_eq!(ids.len() as u64, held, "what is held is served");
    let refused = writer.take(1).await.expect_err("nothing left to lease");
    assert!(
        matches!(&refused, WriterError::Unavailable(message) if message.contains("retry later")),
        "{refused}"
    );
    Ok(())
}
