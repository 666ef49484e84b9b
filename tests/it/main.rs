//! Every integration test, in one crate so that the dependencies link once. Each module is one
//! part of the contract; `common` holds the harnesses they share.

mod common;

mod admission;
mod bad_input;
mod dead_and_slow;
mod defaults;
mod durability;
mod hand_over;
mod hand_over_answers;
mod health_check;
mod http_surface;
mod memory_returned;
mod operability;
mod raw_websocket;
mod readme;
mod resume;
mod reuse_port;
mod shutdown;
mod streams;
