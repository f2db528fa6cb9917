//! placeholder, replaced by a helper
