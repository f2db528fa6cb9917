//! Fuzzes every text parser that is not the token parser: key text forms,
//! block ids, reservation ids, action and resource names and patterns, and
//! unit names.
//! None may panic, and whatever parses must print back to the same text.
#![no_main]

use baton::caveat::Unit;
use baton::keys::{BlockId, PublicKey, RootKey};
use baton::ledger::ResId;
use baton::pattern::{ActionName, ActionPattern, ResourceName, ResourcePattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(k) = PublicKey::from_text(s) {
        assert_eq!(PublicKey::from_text(&k.to_text()).ok(), Some(k));
    }
    if let Ok(k) = RootKey::from_text(s) {
        assert_eq!(
            RootKey::from_text(&k.to_text()).map(|b| b.public()).ok(),
            Some(k.public())
        );
    }
    if let Some(id) = BlockId::from_hex(s) {
        assert_eq!(id.to_string(), s);
    }
    if let Ok(p) = ActionPattern::parse(s) {
        assert_eq!(p.as_str(), s);
        assert!(p.covers(&p));
    }
    if let Ok(p) = ResourcePattern::parse(s) {
        assert_eq!(p.as_str(), s);
    }
    if let Ok(n) = ActionName::parse(s) {
        assert_eq!(n.as_str(), s);
        // A name is matched by itself as an exact pattern and by `*`.
        assert!(ActionPattern::parse(s).is_ok_and(|p| p.matches(&n)));
        assert!(ActionPattern::any().matches(&n));
    }
    if let Ok(n) = ResourceName::parse(s) {
        assert!(ResourcePattern::parse(s).is_ok_and(|p| p.matches(&n)));
    }
    if let Ok(u) = Unit::parse(s) {
        assert_eq!(u.as_str(), s);
    }
    // Reservation ids come from URL paths.
    if let Some(id) = ResId::parse(s) {
        assert_eq!(id.to_string(), s);
    }
});
