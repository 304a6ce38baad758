//! The cluster view: every node answers the server-side event `getStats` with
//! `{"serverId","connections"}`; a node combines the answers with its own numbers.

use std::sync::Arc;

use ioscale::Io;
use serde_json::{Value, json};

#[derive(Clone)]
pub struct ClusterStats {
    io: Io,
    server_id: Arc<str>,
}

impl ClusterStats {
    /// Also registers this node's answer to `getStats`.
    pub fn new(io: Io, server_id: Arc<str>) -> Self {
        let answering = io.clone();
        let id = server_id.clone();
        io.of("/")
            .on_server_event("getStats", move |_payload, ack| {
                if let Some(ack) = ack {
                    ack.send(local_stats(&answering, &id));
                }
            });
        ClusterStats { io, server_id }
    }

    /// `{"serverId", "totalConnections", "serversOnline", "servers": [{"serverId","connections"}]}`;
    /// nodes that did not answer in time are missing from `servers`.
    pub async fn collect(&self) -> Value {
        let mut servers = vec![local_stats(&self.io, &self.server_id)];
        let main = self.io.of("/");
        let (replies, complete) = match main.server_side_emit_with_ack("getStats", ()).await {
            Ok(replies) => (replies, true),
            Err(ioscale::adapter::AdapterError::Timeout { partial, .. }) => (partial, false),
            Err(error) => {
                tracing::warn!(%error, "cluster stats unavailable");
                (Vec::new(), false)
            }
        };
        servers.extend(
            replies
                .into_iter()
                .filter_map(|reply| reply.args.into_iter().next()),
        );
        let total: u64 = servers
            .iter()
            .filter_map(|server| server.get("connections").and_then(Value::as_u64))
            .sum();
        json!({
            "serverId": &*self.server_id,
            "totalConnections": total,
            "serversOnline": servers.len(),
            "complete": complete,
            "servers": servers,
        })
    }
}

fn local_stats(io: &Io, server_id: &str) -> Value {
    json!({"serverId": server_id, "connections": io.of("/").socket_count()})
}
