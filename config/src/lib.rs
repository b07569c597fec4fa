//! Configuration of both daemons: TOML schemas, validation, and error reports that point at the
//! file, line, column and key.

pub mod rx;
pub mod tx;
