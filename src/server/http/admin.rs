//! Administrative handlers that change the running service itself rather
//! than the ledger: live root key rotation (spec/http.md §6.1.1).

use super::Authn;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::keys::keys_json;
use super::{ApiError, bearer, require_admin, unavailable};
use crate::keys::{KeyStatus, Keyset, PublicKey, RootKey};
use crate::server::state::AppState;

/// The administrative action that `POST /v1/keys/rotate` requires.
pub(crate) const ROTATE_ACTION: &str = "baton.admin.keys.rotate";

/// Makes `new` the one active key: every other key is kept, retired, so
/// outstanding tokens keep verifying.
fn activate(keyset: &mut Keyset, new: PublicKey) {
    let old: Vec<PublicKey> = keyset.iter().map(|(k, _)| *k).collect();
    for k in old {
        keyset.insert(k, KeyStatus::Retired);
    }
    keyset.insert(new, KeyStatus::Active);
}

/// `POST /v1/keys/rotate`: a new active root key, durable before use.
///
/// The key goes to the store first, through the writer that owns the store
/// connection; only once it is on disk do the verifier and the signer
/// switch to it, so a restart can never lose a key that signed a token.
/// The verifier learns the key before the signer uses it, so every token
/// minted with it verifies at once.
pub(crate) async fn rotate(
    State(state): State<AppState>,
    headers: Authn,
) -> Result<Response, ApiError> {
    let token = bearer(&state, &headers)?;
    require_admin(&state, &token, ROTATE_ACTION)?;
    // Two rotations at once must not reach the store in one order and the
    // in-memory keys in the other.
    let _turn = state.rotation.lock().await;
    let key = RootKey::generate().map_err(|_| unavailable())?;
    let stored = crate::store::StoredKey::active(&key, state.ledger.clock.now_ms());
    if !state.ledger.rotate_key(stored).await {
        state.metrics.count("rotate_key", 503);
        return Err(unavailable());
    }
    let public = key.public();
    let keys = {
        let mut verifier = state.verifier.write().unwrap_or_else(|p| p.into_inner());
        activate(verifier.keyset_mut(), public);
        keys_json(verifier.keyset())
    };
    *state.signer.write().unwrap_or_else(|p| p.into_inner()) = key;
    tracing::info!(kid = %public.kid(), "rotated the root key");
    state.metrics.count("rotate_key", 200);
    Ok(Json(json!({
        "kid": public.kid().to_string(),
        "public_key": public.to_text(),
        "keys": keys,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activate_retires_every_other_key() {
        let a = RootKey::from_seed(&[1; 32]).public();
        let b = RootKey::from_seed(&[2; 32]).public();
        let c = RootKey::from_seed(&[3; 32]).public();
        let mut ks = Keyset::new().with(a);
        ks.insert(b, KeyStatus::Retired);
        activate(&mut ks, c);
        let statuses: Vec<(PublicKey, KeyStatus)> = ks.iter().map(|(k, s)| (*k, s)).collect();
        assert_eq!(statuses.len(), 3);
        for (k, s) in statuses {
            let want = if k == c {
                KeyStatus::Active
            } else {
                KeyStatus::Retired
            };
            assert_eq!(s, want, "{k:?}");
        }
    }
}
