//! A verifier shared by a gateway's requests, and the source that keeps its
//! keyset in step with the ledger's `GET /v1/keys`.
//!
//! The keyset is fetched at start; then again in the background once older
//! than [`KeyPolicy::max_age`], and at once when a token names a key id the
//! verifier does not know (the issuer rotated), but never twice within
//! [`KeyPolicy::min_interval`]: a flood of tokens with made-up key ids
//! cannot become a flood of fetches. A failed fetch keeps the keys held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::{Client, ClientError};
use crate::authority::{Authorization, Request};
use crate::error::VerifyError;
use crate::keys::Keyset;
use crate::token::Token;
use crate::verifier::{AuthorizeError, Verifier};

/// A [`Verifier`] shared by many tasks and updated in place by a
/// [`KeySource`] (keys) and a [`super::RevocationFeed`] (revocations).
/// Cheap to clone: clones share one verifier.
#[derive(Clone)]
pub struct LiveVerifier(Arc<RwLock<Verifier>>);

impl LiveVerifier {
    /// Shares `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        Self(Arc::new(RwLock::new(verifier)))
    }

    /// Reads the verifier. A poisoned lock is used anyway: every update
    /// is a single assignment or insertion, never left half done.
    pub fn read<R>(&self, f: impl FnOnce(&Verifier) -> R) -> R {
        f(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes the verifier (keys, revocations) for every holder at once.
    pub fn update<R>(&self, f: impl FnOnce(&mut Verifier) -> R) -> R {
        f(&mut self.0.write().unwrap_or_else(|p| p.into_inner()))
    }

    /// [`Verifier::verify_text`].
    pub fn verify_text(&self, text: &str) -> Result<Token, VerifyError> {
        self.read(|v| v.verify_text(text))
    }

    /// [`Verifier::authorize`].
    pub fn authorize(
        &self,
        token: &Token,
        request: &Request,
    ) -> Result<Authorization, AuthorizeError> {
        self.read(|v| v.authorize(token, request))
    }
}

impl std::fmt::Debug for LiveVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveVerifier")
    }
}

/// How a [`KeySource`] follows the ledger's keyset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyPolicy {
    /// Keys older than this are refetched in the background; requests go
    /// on with the held keys meanwhile.
    pub max_age: Duration,
    /// Two fetches are never closer together than this, whatever prompted
    /// them (age, or a token naming an unknown key id).
    pub min_interval: Duration,
}

impl KeyPolicy {
    /// Refetch after `max_age`, at most once per `min_interval`.
    pub fn new(max_age: Duration, min_interval: Duration) -> Self {
        Self {
            max_age,
            min_interval,
        }
    }
}

impl Default for KeyPolicy {
    /// Refetch every 5 minutes, at most once every 10 seconds.
    fn default() -> Self {
        Self::new(Duration::from_secs(300), Duration::from_secs(10))
    }
}

/// Keeps a [`LiveVerifier`]'s keyset equal to the ledger's.
#[derive(Debug)]
pub struct KeySource {
    client: Client,
    policy: KeyPolicy,
    verifier: LiveVerifier,
    /// Bumped at every keyset change, so a task that saw an unknown kid
    /// under generation `g` knows whether someone refreshed since.
    generation: AtomicU64,
    fetched_at: Mutex<Instant>,
    /// Held while fetching; holds when the last fetch was tried.
    last_attempt: Arc<tokio::sync::Mutex<Instant>>,
}

impl KeySource {
    /// Fetches the keyset once (failing if the ledger cannot give it) and
    /// builds the verifier with `make` (e.g. `|k| Verifier::new(k).with_cache(10_000)`).
    pub async fn start(
        client: Client,
        policy: KeyPolicy,
        make: impl FnOnce(Keyset) -> Verifier,
    ) -> Result<Arc<Self>, ClientError> {
        let keyset = client.keyset().await?;
        let now = Instant::now();
        Ok(Arc::new(Self {
            client,
            policy,
            verifier: LiveVerifier::new(make(keyset)),
            generation: AtomicU64::new(0),
            fetched_at: Mutex::new(now),
            last_attempt: Arc::new(tokio::sync::Mutex::new(now)),
        }))
    }

    /// The verifier this source keeps current.
    pub fn verifier(&self) -> &LiveVerifier {
        &self.verifier
    }

    /// Verifies `text`. An unknown key id triggers one keyset fetch (if the
    /// rate limit allows) and a second try; stale keys trigger a
    /// background fetch.
    pub async fn verify_text(self: &Arc<Self>, text: &str) -> Result<Token, VerifyError> {
        let seen = self.generation.load(Ordering::Acquire);
        if self.age() >= self.policy.max_age
            && let Ok(last) = Arc::clone(&self.last_attempt).try_lock_owned()
            && last.elapsed() >= self.policy.min_interval
        {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.refresh_locked(last, seen).await });
        }
        match self.verifier.verify_text(text) {
            Err(VerifyError::UnknownKid) if self.refresh(seen).await => {
                self.verifier.verify_text(text)
            }
            other => other,
        }
    }

    /// Fetches the keyset now, unless the rate limit forbids it or another
    /// task changed it since generation `seen`. True if the keyset changed
    /// since `seen`.
    async fn refresh(&self, seen: u64) -> bool {
        let last = Arc::clone(&self.last_attempt).lock_owned().await;
        self.refresh_locked(last, seen).await
    }

    async fn refresh_locked(
        &self,
        mut last: tokio::sync::OwnedMutexGuard<Instant>,
        seen: u64,
    ) -> bool {
        if self.generation.load(Ordering::Acquire) != seen {
            return true;
        }
        if last.elapsed() < self.policy.min_interval {
            return false;
        }
        *last = Instant::now();
        let keyset = match self.client.keyset().await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "key refresh failed; keeping the held keys");
                return false;
            }
        };
        *self.fetched_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let changed = self.verifier.update(|v| {
            let same = keyset
                .iter()
                .map(|(k, s)| (k.to_bytes(), s))
                .eq(v.keyset().iter().map(|(k, s)| (k.to_bytes(), s)));
            if !same {
                *v.keyset_mut() = keyset;
            }
            !same
        });
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
            tracing::info!("keyset changed at the ledger; keys replaced");
        }
        changed
    }

    fn age(&self) -> Duration {
        self.fetched_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}
