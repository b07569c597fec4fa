//! The gateway's wire protocol, sans-IO: bytes in, messages out, and back. No sockets and no
//! clock reads: time is passed in by the caller. See `WIRE.md` beside this crate for the layout
//! of every byte.

pub mod catalogue;
pub mod codec;
pub mod message;
pub mod model;
pub mod registers;
