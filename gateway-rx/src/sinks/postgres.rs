//! The PostgreSQL sink (placeholder).

use std::sync::Arc;

use config::rx::Postgres;

use super::SinkStats;
use super::spool::SpoolReader;

pub async fn run(_cfg: Postgres, _reader: SpoolReader, _stats: Arc<SinkStats>) {}
