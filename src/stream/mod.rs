//! The core: the two integer streams, where each stands, and what a returning client missed.
//!
//! It knows no protocol and no source: a source publishes into the [`feed::Feed`], the fan-out
//! reads from it, and both protocols subscribe through the fan-out.

pub(crate) mod feed;
pub mod parity;
pub mod resume;
