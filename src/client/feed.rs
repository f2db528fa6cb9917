//! Follows the ledger's revocation feed (`GET /v1/revocations`,
//! spec/http.md §6.12) into a [`LiveVerifier`], so that a gateway refuses
//! revoked tokens offline.
//!
//! # Staleness bound
//! The follower polls every [`FeedPolicy::interval`], reading every page
//! until a page is not full. A revocation the ledger has answered by the
//! time a poll is sent is in the verifier once that poll is answered; so,
//! while the ledger answers, a revocation reaches the verifier within
//! **`interval` + one poll's duration** (each try bounded by the client's
//! timeout, with its retries). When the ledger does not answer, staleness
//! grows: [`RevocationFeed::is_fresh`] turns false once the last successful
//! poll was *sent* more than [`FeedPolicy::max_staleness`] ago, and a
//! gateway should then fail closed (`baton::tower` answers `503`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Bearer, Client, ClientError, LiveVerifier};
use crate::client::types::RevocationPage;

/// How often to poll, and how stale the revocations may get before the
/// follower reports itself not fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedPolicy {
    /// The wait between polls.
    pub interval: Duration,
    /// The oldest a successful poll may be for [`RevocationFeed::is_fresh`].
    pub max_staleness: Duration,
}

impl FeedPolicy {
    /// Poll every `interval`; fresh while a poll succeeded within `max_staleness`.
    pub fn new(interval: Duration, max_staleness: Duration) -> Self {
        Self {
            interval,
            max_staleness,
        }
    }
}

impl Default for FeedPolicy {
    /// Poll every 2 s; stale after 30 s without a successful poll.
    fn default() -> Self {
        Self::new(Duration::from_secs(2), Duration::from_secs(30))
    }
}

/// Where the follower is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedStatus {
    /// The last feed position applied.
    pub next: u64,
    /// When the last successful poll was sent.
    pub synced_at: Instant,
    /// The last poll's error, if it failed.
    pub last_error: Option<String>,
}

/// A background task applying the revocation feed to a verifier. Dropping
/// it stops the task.
#[derive(Debug)]
pub struct RevocationFeed {
    status: Arc<Mutex<FeedStatus>>,
    policy: FeedPolicy,
    task: tokio::task::JoinHandle<()>,
}

impl RevocationFeed {
    /// Reads the whole feed once (failing if the ledger refuses or cannot
    /// be reached: a gateway should not start blind to revocations), then
    /// follows it in the background. `admin` needs the right
    /// `baton.admin.revocations.read` (spec/http.md §5.2).
    pub async fn start(
        client: Client,
        admin: Bearer,
        verifier: LiveVerifier,
        policy: FeedPolicy,
    ) -> Result<Self, ClientError> {
        let sent = Instant::now();
        let next = sync(&client, &admin, &verifier, 0).await?;
        let status = Arc::new(Mutex::new(FeedStatus {
            next,
            synced_at: sent,
            last_error: None,
        }));
        let shared = Arc::clone(&status);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(policy.interval).await;
                let after = lock(&shared).next;
                let sent = Instant::now();
                let result = sync(&client, &admin, &verifier, after).await;
                let mut s = lock(&shared);
                match result {
                    Ok(next) => {
                        s.next = next;
                        s.synced_at = sent;
                        s.last_error = None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "revocation feed poll failed");
                        s.last_error = Some(e.to_string());
                    }
                }
            }
        });
        Ok(Self {
            status,
            policy,
            task,
        })
    }

    /// Where the follower is.
    pub fn status(&self) -> FeedStatus {
        lock(&self.status).clone()
    }

    /// Whether the last successful poll was sent within
    /// [`FeedPolicy::max_staleness`].
    pub fn is_fresh(&self) -> bool {
        lock(&self.status).synced_at.elapsed() <= self.policy.max_staleness
    }
}

impl Drop for RevocationFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<FeedStatus>) -> std::sync::MutexGuard<'_, FeedStatus> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the feed after `after` to its end into `verifier`; the new position.
async fn sync(
    client: &Client,
    admin: &Bearer,
    verifier: &LiveVerifier,
    mut after: u64,
) -> Result<u64, ClientError> {
    loop {
        let page = client.revocations(admin, after).await?;
        let full = page.revocations.len() >= RevocationPage::MAX;
        if page.next < after {
            return Err(ClientError::Protocol("the feed went backwards".into()));
        }
        verifier.update(|v| {
            for e in &page.revocations {
                v.revoke(e.block_id);
            }
        });
        if !full || page.next == after {
            return Ok(page.next);
        }
        after = page.next;
    }
}
