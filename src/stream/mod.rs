//! The core: the two integer streams, where each stands, what a returning client missed, and
//! what a client is owed at a tick.
//!
//! It knows no protocol and no source: a source publishes into the `feed::Feed`, the fan-out
//! reads from it, and both protocols subscribe through the fan-out.

pub(crate) mod feed;
pub(crate) mod owed;
pub mod parity;
pub mod resume;
pub(crate) mod watched;
