//! Fuzzes the store's column decoders (src/store/codec.rs): a corrupted or
//! hostile database file must give `StoreError::Corrupt`, never a panic,
//! and whatever decodes must encode back to a value that decodes the same.
#![no_main]

use baton::keys::BlockId;
use baton::store::codec::{
    decode_chain, decode_outcome, decode_scopes, encode_chain, encode_outcome, encode_scopes,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = decode_outcome(data) {
        let again = encode_outcome(&rec);
        assert_eq!(decode_outcome(&again).ok(), Some(rec));
    }
    if let Ok(chain) = decode_chain(data) {
        assert_eq!(encode_chain(&chain), data);
    }
    // Scopes against a fixed three-block chain.
    let chain = [BlockId([1; 32]), BlockId([2; 32]), BlockId([3; 32])];
    if let Ok(scopes) = decode_scopes(data, &chain) {
        let again = encode_scopes(&scopes, &chain).expect("decoded scopes lie in the chain");
        assert_eq!(decode_scopes(&again, &chain).ok(), Some(scopes));
    }
});
