//! Holder binding and proof of possession (spec/token.md §8): a bound
//! token's text is useless without the holder's secret, proofs bind the
//! audience, the token and the request, and each is accepted once.

use std::sync::Barrier;

use baton::forge;
use baton::{
    ArgValue, Audience, Caveat, HolderKey, HolderProof, Keyset, Request, RootKey, Token,
    UnverifiedToken, Verifier,
};

const NOW: u64 = 1_800_000_000;

struct World {
    root: RootKey,
    agent: HolderKey,
    /// Orchestrator (bearer) -> refund agent (bound to `agent`).
    bound: Token,
    audience: Audience,
}

fn world() -> World {
    let root = RootKey::from_seed(&[1; 32]);
    let agent = HolderKey::from_seed(&[20; 32]);
    let orchestrator = Token::mint_with_seed(
        &root,
        vec![
            Caveat::tools(["crm.*", "refund.*"]).unwrap(),
            Caveat::Depth(4),
        ],
        &[2; 32],
    )
    .unwrap();
    let bound = orchestrator
        .attenuate_with_seed(
            vec![
                Caveat::tools(["refund.issue"]).unwrap(),
                Caveat::Holder(agent.public()),
            ],
            &[3; 32],
        )
        .unwrap();
    World {
        root,
        agent,
        bound,
        audience: Audience::new("gateway-a").unwrap(),
    }
}

fn verifier(w: &World) -> Verifier {
    Verifier::new(Keyset::new().with(w.root.public())).with_audience(w.audience.clone())
}

fn request() -> Request {
    Request::new("refund.issue", NOW)
        .unwrap()
        .resource("customer:4821")
        .unwrap()
        .arg("amount", ArgValue::Int(40))
        .unwrap()
        .body(br#"{"amount":40}"#)
}

fn proved(w: &World, token: &Token, req: Request, ts: u64) -> Request {
    let p = token.prove(&w.agent, &w.audience, &req, ts).unwrap();
    req.with_proof(p)
}

fn code<T>(r: Result<T, baton::verifier::AuthorizeError>) -> &'static str {
    match r {
        Ok(_) => "allow",
        Err(e) => e.code(),
    }
}

#[test]
fn bound_token_carries_no_secret_and_needs_a_proof() {
    let w = world();
    assert_eq!(w.bound.holder(), Some(&w.agent.public()));
    // The proof field is empty: one byte (0x40) ends the token.
    assert_eq!(w.bound.to_bytes().last(), Some(&0x40));
    let v = verifier(&w);
    let t = v.verify_text(&w.bound.to_text()).unwrap();
    assert_eq!(code(v.authorize(&t, &request())), "proof_missing");
    assert_eq!(code(t.authorize(&request())), "proof_missing");
    let ok = proved(&w, &t, request(), NOW);
    assert_eq!(code(v.authorize(&t, &ok)), "allow");
    // The gateway path, batched with the chain, and cached.
    for v in [verifier(&w), verifier(&w).with_cache(16)] {
        for ts in [NOW, NOW - 1, NOW - 2] {
            let req = proved(&w, &t, request(), ts);
            assert_eq!(code(v.authorize_text(&w.bound.to_text(), &req)), "allow");
        }
    }
}

#[test]
fn a_thief_with_the_text_can_neither_use_nor_delegate() {
    let w = world();
    let stolen = UnverifiedToken::from_text(&w.bound.to_text()).unwrap();
    // No key: attenuating or sealing is refused.
    assert_eq!(
        stolen.attenuate(vec![Caveat::Depth(0)]).unwrap_err().code(),
        "holder_mismatch"
    );
    assert_eq!(stolen.seal().unwrap_err().code(), "holder_mismatch");
    // The thief's own key is not the holder's.
    let thief = HolderKey::from_seed(&[66; 32]);
    assert_eq!(
        stolen
            .attenuate_as_holder(&thief, vec![Caveat::Holder(thief.public())])
            .unwrap_err()
            .code(),
        "holder_mismatch"
    );
    assert_eq!(
        stolen
            .prove(&thief, &w.audience, &request(), NOW)
            .unwrap_err()
            .code(),
        "holder_mismatch"
    );
    // A proof signed with the thief's key anyway.
    let v = verifier(&w);
    let forged = HolderProof::sign_with_nonce(
        &thief,
        &w.audience,
        stolen.block_ids().last().unwrap(),
        &request(),
        NOW,
        [1; 16],
    );
    let req = request().with_proof(forged);
    assert_eq!(
        code(v.authorize_text(&w.bound.to_text(), &req)),
        "proof_invalid"
    );
    // Re-binding: the thief appends a block binding its own key, signed by itself.
    let payload = forge::raw_payload(
        None,
        thief.public().as_bytes(),
        &[Caveat::Holder(thief.public())],
    );
    let rebound = forge::append_signed_by(w.bound.to_bytes(), payload, &[66; 32], &[]).unwrap();
    let rebound = UnverifiedToken::from_bytes(&rebound).unwrap();
    assert_eq!(v.verify(&rebound).unwrap_err().code(), "bad_signature");
    // Turning it into a bearer token: a proof secret in a bound chain.
    let bearer = forge::replace_proof(w.bound.to_bytes(), &[66; 32]).unwrap();
    assert_eq!(
        UnverifiedToken::from_bytes(&bearer).unwrap_err().code(),
        "malformed"
    );
}

#[test]
fn the_holder_narrows_and_delegates_with_its_key() {
    let w = world();
    let v = verifier(&w);
    // Narrow for its own use: same holder again.
    let narrowed = w
        .bound
        .attenuate_as_holder(
            &w.agent,
            vec![
                Caveat::resources(["customer:4821"]).unwrap(),
                Caveat::Holder(w.agent.public()),
            ],
        )
        .unwrap();
    let t = v.verify_text(&narrowed.to_text()).unwrap();
    assert_eq!(
        code(v.authorize(&t, &proved(&w, &t, request(), NOW))),
        "allow"
    );
    // A proof made for the parent's last block does not fit the child.
    let parent_proof = w
        .bound
        .prove(&w.agent, &w.audience, &request(), NOW)
        .unwrap();
    assert_eq!(
        code(v.authorize(&t, &request().with_proof(parent_proof))),
        "proof_invalid"
    );
    // Delegate to a child holder: only the child can prove now.
    let child = HolderKey::from_seed(&[21; 32]);
    let delegated = w
        .bound
        .attenuate_as_holder(&w.agent, vec![Caveat::Holder(child.public())])
        .unwrap();
    let t = v.verify_text(&delegated.to_text()).unwrap();
    assert_eq!(
        delegated
            .prove(&w.agent, &w.audience, &request(), NOW)
            .unwrap_err()
            .code(),
        "holder_mismatch"
    );
    let p = delegated
        .prove(&child, &w.audience, &request(), NOW)
        .unwrap();
    assert_eq!(code(v.authorize(&t, &request().with_proof(p))), "allow");
    // Dropping the binding is refused, by the API and by the verifier.
    assert_eq!(
        w.bound
            .attenuate_as_holder(&w.agent, vec![Caveat::Depth(0)])
            .unwrap_err()
            .code(),
        "holder_unbound"
    );
    let eph = [9u8; 32];
    let payload = forge::raw_payload(None, &forge::public_of(&eph), &[Caveat::Depth(0)]);
    let unbound = forge::append_signed_by(w.bound.to_bytes(), payload, &[20; 32], &eph).unwrap();
    assert_eq!(
        UnverifiedToken::from_bytes(&unbound).unwrap_err().code(),
        "holder_unbound"
    );
    // A holder caveat naming a key other than the block's next key.
    let payload = forge::raw_payload(
        None,
        &forge::public_of(&eph),
        &[Caveat::Holder(child.public())],
    );
    let mismatch = forge::append_signed_by(w.bound.to_bytes(), payload, &[20; 32], &[]).unwrap();
    assert_eq!(
        UnverifiedToken::from_bytes(&mismatch).unwrap_err().code(),
        "holder_mismatch"
    );
    // A sealed bound token still needs a proof per request.
    let sealed = UnverifiedToken::from_text(&w.bound.to_text())
        .unwrap()
        .seal_as_holder(&w.agent)
        .unwrap();
    let t = v.verify(&sealed).unwrap();
    assert_eq!(code(v.authorize(&t, &request())), "proof_missing");
    assert_eq!(
        code(v.authorize(&t, &proved(&w, &t, request(), NOW))),
        "allow"
    );
}

#[test]
fn a_proof_binds_audience_block_and_request() {
    let w = world();
    let v = verifier(&w);
    let t = v.verify_text(&w.bound.to_text()).unwrap();
    let sign = |aud: &str, block: baton::BlockId, req: &Request, ts: u64| {
        HolderProof::sign_with_nonce(
            &w.agent,
            &Audience::new(aud).unwrap(),
            &block,
            req,
            ts,
            [ts as u8; 16],
        )
    };
    let last = *t.block_ids().last().unwrap();
    let first = t.block_ids()[0];
    let base = request();
    let other_requests = [
        Request::new("refund.issue", NOW)
            .unwrap()
            .resource("customer:4821")
            .unwrap()
            .arg("amount", ArgValue::Int(40))
            .unwrap()
            .body(br#"{"amount":40}"#)
            .operation("POST /other")
            .unwrap(),
        Request::new("refund.issue", NOW)
            .unwrap()
            .resource("customer:1")
            .unwrap()
            .arg("amount", ArgValue::Int(40))
            .unwrap()
            .body(br#"{"amount":40}"#),
        Request::new("refund.issue", NOW)
            .unwrap()
            .resource("customer:4821")
            .unwrap()
            .arg("amount", ArgValue::Int(4000))
            .unwrap()
            .body(br#"{"amount":40}"#),
        Request::new("refund.issue", NOW)
            .unwrap()
            .resource("customer:4821")
            .unwrap()
            .arg("amount", ArgValue::Int(40))
            .unwrap()
            .body(br#"{"amount":4000}"#),
    ];
    for (i, other) in other_requests.iter().enumerate() {
        let p = sign("gateway-a", last, other, NOW - i as u64);
        assert_eq!(
            code(v.authorize(&t, &base.clone().with_proof(p))),
            "proof_invalid",
            "request variant {i}"
        );
    }
    let p = sign("gateway-b", last, &base, NOW);
    assert_eq!(
        code(v.authorize(&t, &base.clone().with_proof(p))),
        "proof_invalid"
    );
    let p = sign("gateway-a", first, &base, NOW);
    assert_eq!(
        code(v.authorize(&t, &base.clone().with_proof(p))),
        "proof_invalid"
    );
    // Time window: [now - 60, now + 10] by default; configurable and capped.
    for (ts, want) in [
        (NOW - 60, "allow"),
        (NOW - 61, "proof_expired"),
        (NOW + 10, "allow"),
        (NOW + 11, "proof_expired"),
    ] {
        let p = sign("gateway-a", last, &base, ts);
        assert_eq!(
            code(v.authorize(&t, &base.clone().with_proof(p))),
            want,
            "ts {ts}"
        );
    }
    let wide = verifier(&w).with_proof_window(10_000, 10_000);
    let p = sign("gateway-a", last, &base, NOW - 301);
    assert_eq!(
        code(wide.authorize(&t, &base.clone().with_proof(p))),
        "proof_expired"
    );
    let p = sign("gateway-a", last, &base, NOW - 300);
    assert_eq!(
        code(wide.authorize(&t, &base.clone().with_proof(p))),
        "allow"
    );
    // Malformed header, no audience configured, bearer where bound is required.
    let req = base.clone().with_proof_header("baton_proof_v1_AAAA");
    assert_eq!(code(v.authorize(&t, &req)), "proof_malformed");
    let no_audience = Verifier::new(Keyset::new().with(w.root.public()));
    let p = sign("gateway-a", last, &base, NOW);
    assert_eq!(
        code(no_audience.authorize(&t, &base.clone().with_proof(p))),
        "proof_unavailable"
    );
    let strict = verifier(&w).with_require_holder(true);
    let bearer = Token::mint_with_seed(
        &w.root,
        vec![Caveat::tools(["refund.issue"]).unwrap()],
        &[4; 32],
    )
    .unwrap();
    assert_eq!(
        code(strict.authorize_text(&bearer.to_text(), &base)),
        "holder_required"
    );
    assert_eq!(
        code(verifier(&w).authorize_text(&bearer.to_text(), &base)),
        "allow"
    );
}

#[test]
fn a_proof_is_accepted_once_and_a_denied_request_does_not_use_it() {
    let w = world();
    let v = verifier(&w);
    let t = v.verify_text(&w.bound.to_text()).unwrap();
    // A request the token denies: the proof is valid but not recorded.
    let denied = Request::new("crm.read", NOW).unwrap();
    let p = t.prove(&w.agent, &w.audience, &denied, NOW).unwrap();
    let req = denied.with_proof(p);
    assert_eq!(code(v.authorize(&t, &req)), "action_not_allowed");
    let req = proved(&w, &t, request(), NOW);
    assert_eq!(code(v.authorize(&t, &req)), "allow");
    assert_eq!(code(v.authorize(&t, &req)), "proof_replayed");
    assert_eq!(
        code(v.authorize_text(&w.bound.to_text(), &req)),
        "proof_replayed"
    );
    // The cache never skips the replay check.
    let cached = verifier(&w).with_cache(4);
    let req = proved(&w, &t, request(), NOW);
    assert_eq!(
        code(cached.authorize_text(&w.bound.to_text(), &req)),
        "allow"
    );
    assert_eq!(
        code(cached.authorize_text(&w.bound.to_text(), &req)),
        "proof_replayed"
    );
    // A full store refuses new proofs and keeps the live ones.
    let tiny = verifier(&w).with_replay_capacity(1, 1);
    let a = proved(&w, &t, request(), NOW);
    let b = proved(&w, &t, request(), NOW);
    assert_eq!(code(tiny.authorize(&t, &a)), "allow");
    assert_eq!(code(tiny.authorize(&t, &b)), "proof_unavailable");
    assert_eq!(code(tiny.authorize(&t, &a)), "proof_replayed");
}

#[test]
fn token_errors_come_before_proof_errors() {
    let w = world();
    let v = verifier(&w);
    let mut bytes = w.bound.to_bytes().to_vec();
    // Flip a bit in the last block's signature (just before the empty proof).
    let n = bytes.len();
    bytes[n - 10] ^= 1;
    let text = UnverifiedToken::from_bytes(&bytes).unwrap().to_text();
    let bad_proof = request().with_proof_header("nope");
    let expired = proved(&w, &w.bound, request(), NOW - 1000);
    let wrong = {
        let other = Request::new("refund.issue", NOW).unwrap();
        let p = w.bound.prove(&w.agent, &w.audience, &other, NOW).unwrap();
        request().with_proof(p)
    };
    for req in [request(), bad_proof, expired, wrong.clone()] {
        assert_eq!(code(v.authorize_text(&text, &req)), "bad_signature");
    }
    // With a valid chain the same bad proof is named as such.
    assert_eq!(
        code(v.authorize_text(&w.bound.to_text(), &wrong)),
        "proof_invalid"
    );
}

#[test]
fn the_same_proof_sent_64_times_at_once_is_accepted_exactly_once() {
    let w = world();
    let v = verifier(&w).with_cache(16);
    let text = w.bound.to_text();
    let req = proved(&w, &w.bound, request(), NOW);
    let barrier = Barrier::new(64);
    let results: Vec<&'static str> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    code(v.authorize_text(&text, &req))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|c| **c == "allow").count(), 1);
    assert_eq!(
        results.iter().filter(|c| **c == "proof_replayed").count(),
        63
    );
}
