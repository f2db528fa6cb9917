//! The ledger calls of the proxy: the keyset at start, and for a priced
//! tool a reserve before the call, then a commit or a release
//! (spec/http.md §6.1, §6.4, §6.6, §6.7).
//!
//! Kept to one small type so that it can be swapped for the crate's
//! general ledger client without touching the proxy. Every change carries
//! an idempotency key and is retried with the same key while the ledger is
//! unreachable, so a lost answer never charges twice.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::caveat::ArgValue;
use crate::keys::{KeyStatus, Keyset, PublicKey};

use super::policy::{Charge, MappedCall};

/// One ledger request, answer included, takes at most this long.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of one change while the ledger is unreachable or answers 5xx.
const ATTEMPTS: u32 = 3;
/// The first pause between attempts; doubled after each.
const BACKOFF: Duration = Duration::from_millis(100);
/// A ledger answer larger than this is not one.
const MAX_BODY: usize = 1024 * 1024;
/// How long a hold lasts if the proxy never finishes it (crash, cancelled
/// call): the ledger then returns it by itself (spec/http.md §3.5).
const HOLD_TTL_MS: u64 = 300_000;

/// Why a ledger call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The ledger answered 4xx with this reason code.
    #[error("{status} {code}: {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The reason code (spec/http.md §7), or `ledger_rejected` if the
        /// body named none that looks like one.
        code: String,
        /// The ledger's message.
        message: String,
    },
    /// No answer, a 5xx, or an answer that is not the documented JSON.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// The keyset answer held no usable key, or a key that does not parse.
    #[error("the ledger's keyset is unusable: {0}")]
    Keyset(&'static str),
}

/// A ledger at a base URL such as `http://127.0.0.1:7878`.
#[derive(Debug, Clone)]
pub struct Ledger {
    base: String,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct KeysBody {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
struct KeyEntry {
    kid: String,
    public_key: String,
    status: String,
}

impl Ledger {
    /// A ledger at `base` (trailing slashes are ignored).
    pub fn new(base: &str) -> Result<Self, LedgerError> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// The issuer's root public keys (`GET /v1/keys`). A key whose status
    /// this proxy does not know is not trusted.
    pub async fn keys(&self) -> Result<Keyset, LedgerError> {
        let (status, body) = self.send(self.client.get(self.url("/v1/keys"))).await?;
        if status != 200 {
            return Err(LedgerError::Unavailable(format!("keys: status {status}")));
        }
        let body: KeysBody = serde_json::from_value(body)
            .map_err(|_| LedgerError::Keyset("not the documented JSON"))?;
        let mut keyset = Keyset::new();
        for k in body.keys {
            let key = PublicKey::from_text(&k.public_key)
                .map_err(|_| LedgerError::Keyset("a public key does not parse"))?;
            if key.kid().to_string() != k.kid {
                return Err(LedgerError::Keyset("a kid does not match its key"));
            }
            let status = match k.status.as_str() {
                "active" => KeyStatus::Active,
                "retired" => KeyStatus::Retired,
                _ => continue,
            };
            keyset.insert(key, status);
        }
        if keyset.iter().next().is_none() {
            return Err(LedgerError::Keyset("no keys"));
        }
        Ok(keyset)
    }

    /// Holds `charge` for `call` as `bearer`; returns the reservation id.
    pub async fn reserve(
        &self,
        bearer: &str,
        call: &MappedCall,
        charge: &Charge,
        key: &str,
    ) -> Result<String, LedgerError> {
        let args: BTreeMap<&str, Value> = call
            .args
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    ArgValue::Int(i) => json!(i),
                    ArgValue::Str(s) => json!(s),
                };
                (k.as_str(), v)
            })
            .collect();
        let mut body = json!({
            "action": call.action,
            "args": args,
            "unit": charge.unit.as_str(),
            "amount": charge.amount,
            "ttl_ms": HOLD_TTL_MS,
            "idempotency_key": key,
        });
        if let Some(r) = &call.resource {
            body["resource"] = json!(r);
        }
        let v = self.change("/v1/reservations", bearer, &body).await?;
        // The id goes into later URLs: accept only the documented form.
        v["reservation"]["id"]
            .as_str()
            .filter(|id| {
                id.len() == 40
                    && id.starts_with("rsv_")
                    && id[4..]
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
            .map(str::to_owned)
            .ok_or_else(|| LedgerError::Unavailable("a reservation without a valid id".into()))
    }

    /// Charges `actual` on reservation `id` and returns the rest of the hold.
    pub async fn commit(
        &self,
        bearer: &str,
        id: &str,
        actual: u64,
        key: &str,
    ) -> Result<(), LedgerError> {
        let body = json!({"actual": actual, "idempotency_key": key});
        let path = format!("/v1/reservations/{id}/commit");
        self.change(&path, bearer, &body).await.map(drop)
    }

    /// Returns the whole hold of reservation `id`.
    pub async fn release(&self, bearer: &str, id: &str, key: &str) -> Result<(), LedgerError> {
        let body = json!({"idempotency_key": key});
        let path = format!("/v1/reservations/{id}/release");
        self.change(&path, bearer, &body).await.map(drop)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a change, retrying with the same body (and so the same
    /// idempotency key) while the ledger is unavailable.
    async fn change(&self, path: &str, bearer: &str, body: &Value) -> Result<Value, LedgerError> {
        let mut pause = BACKOFF;
        let mut attempt = 1;
        loop {
            let req = self
                .client
                .post(self.url(path))
                .bearer_auth(bearer)
                .json(body);
            let answer = match self.send(req).await {
                Ok((200..=299, v)) => return Ok(v),
                Ok((status @ 400..=499, v)) => return Err(rejected(status, &v)),
                Ok((status, _)) => LedgerError::Unavailable(format!("status {status}")),
                Err(e) => e,
            };
            if attempt >= ATTEMPTS {
                return Err(answer);
            }
            tracing::warn!(path, error = %answer, "ledger unavailable; retrying with the same key");
            tokio::time::sleep(pause).await;
            pause *= 2;
            attempt += 1;
        }
    }

    /// Sends `req`; returns the status and the JSON body (bounded).
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value), LedgerError> {
        let mut resp = req
            .send()
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        let status = resp.status().as_u16();
        let mut buf = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?
        {
            if buf.len() + chunk.len() > MAX_BODY {
                return Err(LedgerError::Unavailable("answer too large".into()));
            }
            buf.extend_from_slice(&chunk);
        }
        let body = serde_json::from_slice(&buf)
            .map_err(|_| LedgerError::Unavailable(format!("status {status}, body is not JSON")))?;
        Ok((status, body))
    }
}

/// The ledger's 4xx as an error. The code is passed on to the agent, so
/// only a code of the documented shape (`[a-z_]`, at most 64 bytes) is.
fn rejected(status: u16, body: &Value) -> LedgerError {
    let e = &body["error"];
    let code = e["code"]
        .as_str()
        .filter(|c| {
            !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .unwrap_or("ledger_rejected");
    let message = e["message"]
        .as_str()
        .unwrap_or("the ledger refused the request");
    LedgerError::Rejected {
        status,
        code: code.to_owned(),
        message: message.chars().take(512).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_keep_only_well_formed_codes() {
        let e = rejected(
            402,
            &json!({"error": {"code": "insufficient_budget", "message": "m"}}),
        );
        assert!(
            matches!(e, LedgerError::Rejected { status: 402, ref code, .. } if code == "insufficient_budget")
        );
        for body in [
            json!({"error": {"code": "Bad Code\n"}}),
            json!({"error": {"code": 7}}),
            json!({"nothing": true}),
        ] {
            match rejected(400, &body) {
                LedgerError::Rejected { code, .. } => assert_eq!(code, "ledger_rejected"),
                other => panic!("{other:?}"),
            }
        }
    }
}
