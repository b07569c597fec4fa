//! Polled mode: a Read of every tag each `poll_interval`, for servers that handle
//! subscriptions badly.

use std::sync::Arc;

use config::opcua::OpcUaEndpoint;
use opcua::types::{AttributeId, ReadValueId, StatusCode, TimestampsToReturn};

use super::convert;
use super::endpoint::{Connection, Item};
use crate::source::Health;
use crate::tags::TagTable;

pub(crate) async fn run(
    conn: &mut Connection,
    ep: &OpcUaEndpoint,
    items: &[Item],
    table: &Arc<TagTable>,
    health: &Arc<Health>,
) -> StatusCode {
    let reads: Vec<ReadValueId> = items
        .iter()
        .map(|it| ReadValueId {
            node_id: it.node.clone(),
            attribute_id: AttributeId::Value as u32,
            ..Default::default()
        })
        .collect();
    let (per_read, _) = super::endpoint::operation_limits(&conn.session).await;
    let mut tick = tokio::time::interval(ep.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            code = &mut conn.lost => return code.unwrap_or(StatusCode::BadNotConnected),
            _ = tick.tick() => {}
        }
        let started = std::time::Instant::now();
        for (chunk, its) in reads.chunks(per_read).zip(items.chunks(per_read)) {
            let values = match conn
                .session
                .read(chunk, TimestampsToReturn::Both, 0.0)
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    health.poll_failed(&format!("Read: {e}"));
                    return e.status();
                }
            };
            let now = crate::unix_now();
            table.apply(
                its.iter()
                    .zip(values.iter())
                    .map(|(it, dv)| convert::update(it.tag, it.ty, dv, now)),
            );
        }
        health.poll_ok(started.elapsed());
    }
}
