//! Size limits, checked before any cryptographic work (spec/token.md §12).
//!
//! They bound the memory and CPU an attacker can make a verifier spend on one
//! token. Each one is far above what a real delegation chain needs: the
//! support scenario's four-block token is 685 bytes.

/// The prefix of a token's text form (spec/token.md §2). It lives here,
/// with the caps, because the text size cap counts it; [`crate::token`]
/// re-exports it.
pub const TEXT_PREFIX: &str = "baton_v1_";
/// Maximum size of a token in its binary (CBOR) form, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Maximum length of a token's text form: the prefix plus unpadded
/// base64url of [`MAX_TOKEN_BYTES`] bytes.
pub const MAX_TOKEN_TEXT: usize = TEXT_PREFIX.len() + (MAX_TOKEN_BYTES * 4).div_ceil(3);
/// Maximum number of blocks in a token, authority block included.
pub const MAX_BLOCKS: usize = 16;
/// Maximum number of caveats in one block.
pub const MAX_CAVEATS_PER_BLOCK: usize = 32;
/// Maximum length of any string (pattern, name, label, unit), in bytes.
pub const MAX_STRING_BYTES: usize = 128;
/// Maximum number of entries in a pattern set or a `one_of` list.
pub const MAX_SET_ENTRIES: usize = 32;
/// Maximum number of segments in an action or resource name.
pub const MAX_SEGMENTS: usize = 16;
/// Maximum number of arguments in one authorization request.
pub const MAX_REQUEST_ARGS: usize = 64;
