//! The conformance suite every backend runs (filled in next).
