//! Subscription mode: one subscription per session, one monitored item per tag (sampling
//! interval, queue size and deadband as configured), values applied to the table as the
//! server publishes them.

use std::sync::Arc;

use config::opcua::{DeadbandType, OpcUaEndpoint};
use opcua::client::{MonitoredItem, SubscriptionCallbacks};
use opcua::types::{
    AttributeId, DataChangeFilter, DataChangeTrigger, ExtensionObject, MonitoredItemCreateRequest,
    MonitoringMode, MonitoringParameters, ReadValueId, StatusCode, TimestampsToReturn,
};
use protocol::model::{Quality, TagIndex, ValueType};
use tokio::sync::mpsc;

use super::convert;
use super::endpoint::{Connection, Item};
use crate::source::Health;
use crate::tags::{TagTable, Update};

/// Notifications per publish response at most, so a burst of changes of thousands of tags
/// comes in several messages within any server's and our decoding limits.
const NOTIFICATIONS_PER_PUBLISH: u32 = 1000;

pub(crate) async fn run(
    conn: &mut Connection,
    ep: &OpcUaEndpoint,
    items: &[Item],
    table: &Arc<TagTable>,
    health: &Arc<Health>,
) -> StatusCode {
    // Client handle = position in `by_handle` + 1 (0 would make the library pick one).
    let by_handle: Arc<Vec<(TagIndex, ValueType)>> =
        Arc::new(items.iter().map(|it| (it.tag, it.ty)).collect());
    let (status_tx, mut status_rx) = mpsc::unbounded_channel::<StatusCode>();
    let callbacks = {
        let table = table.clone();
        let health = health.clone();
        let by_handle = by_handle.clone();
        SubscriptionCallbacks::new(
            move |n| {
                let _ = status_tx.send(n.status);
            },
            move |dv, item: &MonitoredItem| {
                let Some(&(tag, ty)) = (item.client_handle() as usize)
                    .checked_sub(1)
                    .and_then(|i| by_handle.get(i))
                else {
                    return;
                };
                table.apply([convert::update(tag, ty, &dv, crate::unix_now())]);
                health.poll_ok(std::time::Duration::ZERO);
            },
            |_, _| {},
        )
    };
    let publishing = ep.publishing_interval;
    // Lifetime and keep-alive in publishing intervals: the server keeps the subscription for
    // 3 keep-alives without a publish request, and sends a keep-alive every ~5 s when idle.
    let keep_alive = (5_000 / publishing.as_millis().max(1)).clamp(1, 1000) as u32;
    let sub = conn
        .session
        .create_subscription(
            publishing,
            keep_alive * 3,
            keep_alive,
            NOTIFICATIONS_PER_PUBLISH,
            0,
            true,
            callbacks,
        )
        .await;
    let sub = match sub {
        Ok(id) => id,
        Err(e) => {
            health.poll_failed(&format!("CreateSubscription: {e}"));
            return e.status();
        }
    };
    let (_, per_call) = super::endpoint::operation_limits(&conn.session).await;
    let mut bad = Vec::new();
    for (chunk_no, chunk) in items.chunks(per_call).enumerate() {
        let requests: Vec<MonitoredItemCreateRequest> = chunk
            .iter()
            .enumerate()
            .map(|(j, it)| request(ep, it, (chunk_no * per_call + j + 1) as u32))
            .collect();
        match conn
            .session
            .create_monitored_items(sub, TimestampsToReturn::Both, requests)
            .await
        {
            Ok(results) => {
                for (it, r) in chunk.iter().zip(results) {
                    if r.result.status_code.is_bad() {
                        tracing::warn!(endpoint = %ep.name, tag = %ep.tags[it.local].name, node = %ep.tags[it.local].node_text, status = %r.result.status_code, "monitored item refused");
                        bad.push(Update {
                            tag: it.tag,
                            value: None,
                            quality: Quality(r.result.status_code.bits()),
                            time: crate::unix_now(),
                        });
                    }
                }
            }
            Err(e) => {
                health.poll_failed(&format!("CreateMonitoredItems: {e}"));
                return e.status();
            }
        }
    }
    if !bad.is_empty() {
        health.poll_failed(&format!(
            "{} monitored item(s) refused (first: {})",
            bad.len(),
            Quality(bad[0].quality.0).name()
        ));
        table.apply(bad);
    }
    loop {
        tokio::select! {
            code = &mut conn.lost => return code.unwrap_or(StatusCode::BadNotConnected),
            Some(status) = status_rx.recv() => {
                if status.is_bad() {
                    health.poll_failed(&format!("subscription status {status}"));
                    return status;
                }
            }
        }
    }
}

fn request(ep: &OpcUaEndpoint, it: &Item, handle: u32) -> MonitoredItemCreateRequest {
    let t = &ep.tags[it.local];
    let filter = if t.deadband > 0.0 {
        ExtensionObject::from_message(DataChangeFilter {
            trigger: DataChangeTrigger::StatusValueTimestamp,
            deadband_type: match t.deadband_type {
                DeadbandType::Absolute => 1,
                DeadbandType::Percent => 2,
            },
            deadband_value: t.deadband,
        })
    } else {
        ExtensionObject::null()
    };
    MonitoredItemCreateRequest {
        item_to_monitor: ReadValueId {
            node_id: it.node.clone(),
            attribute_id: AttributeId::Value as u32,
            ..Default::default()
        },
        monitoring_mode: MonitoringMode::Reporting,
        requested_parameters: MonitoringParameters {
            client_handle: handle,
            // 0 asks for the fastest rate the server supports; otherwise as configured.
            sampling_interval: t.sampling_interval.as_secs_f64() * 1000.0,
            filter,
            queue_size: t.queue_size,
            discard_oldest: true,
        },
    }
}
