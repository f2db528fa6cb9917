//! `Request::now`: the system clock decides expiry, with the verifier's skew.

use baton::{Caveat, Keyset, Request, RootKey, Token, Verifier};

#[test]
fn request_now_reads_the_system_clock() {
    let root = RootKey::generate().unwrap();
    let verifier = Verifier::new(Keyset::new().with(root.public()));
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let until = |not_after| {
        let t = Token::mint(
            &root,
            vec![
                Caveat::tools(["crm.read"]).unwrap(),
                Caveat::Expiry {
                    not_before: None,
                    not_after,
                },
            ],
        )
        .unwrap();
        verifier.verify_text(&t.to_text()).unwrap()
    };
    let now = || Request::now("crm.read").unwrap();
    assert!(verifier.authorize(&until(clock + 3600), &now()).is_ok());
    // Past the 30-second skew allowance: expired.
    let e = verifier.authorize(&until(clock - 120), &now()).unwrap_err();
    assert_eq!(e.code(), "expired");
    assert_eq!(
        Request::now("not a name!").unwrap_err().code(),
        "invalid_action"
    );
}
