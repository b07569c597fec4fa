//! The gateway's wire protocol, sans-IO: bytes in, messages out, and back. No sockets and no
//! clock reads: time is passed in by the caller. See `WIRE.md` beside this crate for the layout
//! of every byte. Beside it, plain data the daemons keep about the tags it carries (the
//! catalogue, [`changed_tags`]).

pub mod auth;
pub mod catalogue;
pub mod changed_tags;
pub mod codec;
pub mod decoder;
pub mod encoder;
pub mod epoch;
pub mod error;
pub mod fec;
pub mod frame;
pub mod message;
pub mod model;
pub mod registers;
mod session;
pub mod stats;
pub mod syslog;
pub mod tag_ref;
pub mod window;
pub mod wire;

pub use decoder::{Decoder, DecoderConfig, DecoderStats, Event, ResumePoint};
pub use encoder::{Encoder, EncoderConfig};
pub use error::{ConfigError, EncodeError, Reject};
