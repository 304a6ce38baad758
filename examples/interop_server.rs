//! A server exercising the library API, driven by the interop tests with the official
//! `socket.io-client`. Run: `cargo run -p ioscale-examples --bin interop_server -- --port 3000`.
//!
//! Namespaces `/`, `/admin` (middleware: auth `{token:"secret"}` only) and dynamic
//! `/dyn-<digits>`. Events: `echo`, `echo-ack`, `join`, `leave`, `get-rooms`, `broadcast`,
//! `request-ack`, `broadcast-with-ack`, `disconnect-me` (see `install`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ioscale::adapter::cluster::ClusterNode;
use ioscale::adapter::redis::sharded::{ShardedConfig, ShardedRedis, SubscriptionMode};
use ioscale::adapter::redis::{ClassicRedis, RedisConfig};
use ioscale::{BroadcastOperator, ConnectError, Event, Io, IoConfig, Namespace, Payload, Socket};
use serde_json::{Value, json};

/// How this server joins a cluster, from the command line.
struct RedisArgs {
    urls: Vec<String>,
    sharded: bool,
    subscription_mode: SubscriptionMode,
}

/// `--port N` (default 3000), `--redis-url URL[,URL...]` (joins a Redis cluster),
/// `--redis-mode classic|sharded`, `--redis-subscription-mode static|dynamic|dynamic-private`.
fn main_args() -> (u16, RedisArgs) {
    let mut args = std::env::args().skip(1);
    let mut port = 3000;
    let mut redis = RedisArgs {
        urls: Vec::new(),
        sharded: false,
        subscription_mode: SubscriptionMode::default(),
    };
    let fail = |message: &str| -> ! {
        eprintln!("{message}");
        std::process::exit(2)
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| fail("--port expects a port number"));
            }
            "--redis-url" => redis.urls.extend(
                args.next()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|url| !url.is_empty())
                    .map(str::to_owned),
            ),
            "--redis-mode" => {
                redis.sharded = match args.next().as_deref() {
                    Some("sharded") => true,
                    Some("classic") => false,
                    _ => fail("--redis-mode expects classic or sharded"),
                }
            }
            "--redis-subscription-mode" => {
                redis.subscription_mode = args
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .unwrap_or_else(|error: String| fail(&error));
            }
            _ => {}
        }
    }
    (port, redis)
}

/// Connects to Redis as the arguments say; `None` without a url.
async fn redis_link(redis: RedisArgs) -> Option<Arc<ClusterNode>> {
    let first = redis.urls.first()?.clone();
    let link = if redis.sharded {
        let mut config = ShardedConfig::new(redis.urls);
        config.subscription_mode = redis.subscription_mode;
        ShardedRedis::connect(config)
    } else {
        ClassicRedis::connect(RedisConfig::new(first))
    };
    let link = link.unwrap_or_else(|error| {
        eprintln!("{error}");
        std::process::exit(2)
    });
    link.wait_until_up(Duration::from_secs(5)).await;
    Some(link)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

fn millis(value: Option<&Value>) -> Duration {
    Duration::from_millis(value.and_then(Value::as_u64).unwrap_or(1000))
}

/// The broadcast an event's options describe: `to` rooms and `except` rooms.
fn operator(ns: &Arc<Namespace>, options: &Value) -> BroadcastOperator {
    targeted(ns.broadcast(), options)
}

/// `to`/`room` and `except` of the options applied to a broadcast.
fn targeted(mut operator: BroadcastOperator, options: &Value) -> BroadcastOperator {
    for room in strings(options.get("to"))
        .into_iter()
        .chain(strings(options.get("room")))
    {
        operator = operator.to(room);
    }
    for room in strings(options.get("except")) {
        operator = operator.except(room);
    }
    operator
}

/// The `data` option with the binary attachments the event carried (placeholders keep
/// their numbers, so they still point at the right attachment).
fn data_of(options: &Value, event: &Event) -> Payload {
    Payload {
        args: vec![options.get("data").cloned().unwrap_or(Value::Null)],
        attachments: event.payload.attachments.clone(),
    }
}

fn ack(event: Event, payload: impl Into<Payload>) {
    if let Some(ack) = event.ack {
        ack.send(payload);
    }
}

fn install(ns: &Arc<Namespace>) {
    ns.on_connection(|socket| {
        let _ = socket.emit(
            "welcome",
            json!({"id": socket.id().as_str(), "nsp": socket.namespace().name(), "auth": socket.handshake().auth}),
        );
    });
    ns.on("echo", |socket, event| {
        let _ = socket.emit("echo", event.payload);
    });
    ns.on("echo-ack", |_socket, event| {
        let payload = event.payload.clone();
        ack(event, payload);
    });
    ns.on("join", |socket, event| {
        if let Some(Value::String(room)) = event.payload.args.first() {
            socket.join(room.as_str());
        }
        ack(event, json!(true));
    });
    ns.on("leave", |socket, event| {
        if let Some(Value::String(room)) = event.payload.args.first() {
            socket.leave(room);
        }
        ack(event, json!(true));
    });
    ns.on("get-rooms", |socket, event| {
        let mut rooms: Vec<String> = socket.rooms().iter().map(|r| r.to_string()).collect();
        rooms.sort();
        ack(event, json!(rooms));
    });
    ns.on("broadcast", |socket, event| {
        let options = event.payload.args.first().cloned().unwrap_or(Value::Null);
        let name = options
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("broadcast");
        // `fromSocket`: `socket.broadcast` (everyone but the sender).
        let operator = if options.get("fromSocket") == Some(&Value::Bool(true)) {
            targeted(socket.broadcast(), &options)
        } else {
            operator(socket.namespace(), &options)
        };
        operator.emit(name, data_of(&options, &event));
        ack(event, json!(true));
    });
    ns.on("request-ack", |socket, event| {
        let options = event.payload.args.first().cloned().unwrap_or(Value::Null);
        let socket = socket.clone();
        tokio::spawn(async move {
            let name = options.get("event").and_then(Value::as_str).unwrap_or("request");
            let data = data_of(&options, &event);
            let reply = match socket.emit_with_ack(name, data, millis(options.get("timeoutMs"))).await {
                Ok(response) => Payload {
                    args: vec![json!({"ok": true, "response": response.args})],
                    attachments: response.attachments,
                },
                Err(error) => Payload::from(json!({"ok": false, "error": match error { ioscale::AckError::Timeout => "timeout", _ => "disconnected" }})),
            };
            ack(event, reply);
        });
    });
    ns.on("broadcast-with-ack", |socket, event| {
        let options = event.payload.args.first().cloned().unwrap_or(Value::Null);
        let operator =
            operator(socket.namespace(), &options).timeout(millis(options.get("timeoutMs")));
        tokio::spawn(async move {
            let name = options
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or("request");
            let data = options.get("data").cloned().unwrap_or(Value::Null);
            let acks = operator.emit_with_ack(name, data).await;
            let responses: Vec<Value> = acks
                .replies
                .into_iter()
                .map(|reply| reply.args.into_iter().next().unwrap_or(Value::Null))
                .collect();
            let err = if acks.timed_out {
                json!("timeout")
            } else {
                Value::Null
            };
            ack(event, json!({"err": err, "responses": responses}));
        });
    });
    ns.on("disconnect-me", |socket: &Arc<Socket>, _event| {
        socket.disconnect(false)
    });
    ns.on("set-data", |socket, event| {
        *socket.data.write() = event.payload.args.first().cloned().unwrap_or(Value::Null);
        ack(event, json!(true));
    });
    install_cluster_events(ns);
}

/// The options object an event carries first.
fn options_of(event: &Event) -> Value {
    event.payload.args.first().cloned().unwrap_or(Value::Null)
}

/// Cluster-wide operations, triggered by a client so tests can drive them on any node.
fn install_cluster_events(ns: &Arc<Namespace>) {
    ns.on("cluster-fetch", |socket, event| {
        let operator = operator(socket.namespace(), &options_of(&event));
        tokio::spawn(async move {
            let reply = match operator.fetch_sockets().await {
                Ok(sockets) => {
                    let mut sockets: Vec<Value> = sockets
                        .iter()
                        .map(|s| {
                            json!({"id": s.id(), "rooms": s.rooms(), "data": s.data(),
                                   "auth": s.handshake().get("auth")})
                        })
                        .collect();
                    sockets.sort_by_key(|s| s["id"].as_str().unwrap_or_default().to_owned());
                    json!({"ok": true, "sockets": sockets})
                }
                Err(error) => json!({"ok": false, "error": error.to_string()}),
            };
            ack(event, reply);
        });
    });
    ns.on("cluster-join", |socket, event| {
        let options = options_of(&event);
        for room in strings(options.get("join")) {
            operator(socket.namespace(), &options).sockets_join(room);
        }
        ack(event, json!(true));
    });
    ns.on("cluster-leave", |socket, event| {
        let options = options_of(&event);
        for room in strings(options.get("leave")) {
            operator(socket.namespace(), &options).sockets_leave(room);
        }
        ack(event, json!(true));
    });
    ns.on("cluster-disconnect", |socket, event| {
        let options = options_of(&event);
        let close = options
            .get("close")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        operator(socket.namespace(), &options).disconnect_sockets(close);
        ack(event, json!(true));
    });
    ns.on("cluster-rooms", |socket, event| {
        let ns = socket.namespace().clone();
        tokio::spawn(async move {
            let reply = match ns.all_rooms().await {
                Ok(rooms) => {
                    let mut rooms: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
                    rooms.sort();
                    json!({"ok": true, "rooms": rooms})
                }
                Err(error) => json!({"ok": false, "error": error.to_string()}),
            };
            ack(event, reply);
        });
    });
    ns.on("cluster-count", |socket, event| {
        let ns = socket.namespace().clone();
        tokio::spawn(async move {
            let reply = match ns.server_count().await {
                Ok(count) => json!({"ok": true, "count": count}),
                Err(error) => json!({"ok": false, "error": error.to_string()}),
            };
            ack(event, reply);
        });
    });
    // `{event, args, ack}`: a server-side event to the other nodes, with or without acks.
    ns.on("cluster-sse", |socket, event| {
        let options = options_of(&event);
        let name = options
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("sse")
            .to_owned();
        let args = match options.get("args") {
            Some(Value::Array(args)) => args.clone(),
            _ => Vec::new(),
        };
        let payload = Payload {
            args,
            attachments: event.payload.attachments.clone(),
        };
        if options.get("ack") != Some(&Value::Bool(true)) {
            socket.namespace().server_side_emit(&name, payload);
            ack(event, json!(true));
            return;
        }
        let ns = socket.namespace().clone();
        tokio::spawn(async move {
            let reply = match ns.server_side_emit_with_ack(&name, payload).await {
                Ok(replies) => {
                    let responses: Vec<Value> = replies
                        .iter()
                        .map(|r| r.args.first().cloned().unwrap_or(Value::Null))
                        .collect();
                    Payload {
                        args: vec![json!({"ok": true, "responses": responses})],
                        attachments: replies.into_iter().flat_map(|r| r.attachments).collect(),
                    }
                }
                Err(error) => Payload::from(json!({"ok": false, "error": error.to_string()})),
            };
            ack(event, reply);
        });
    });
    // Server-side events from other nodes: `ping-node` is answered with `["pong", ...args]`;
    // `sse` and `sse-binary` are relayed to this node's clients as `sse-received`.
    ns.on_server_event("ping-node", |payload, server_ack| {
        if let Some(server_ack) = server_ack {
            let mut args = payload.args;
            args.insert(0, json!("pong"));
            server_ack.send(Payload {
                args: vec![Value::Array(args)],
                attachments: payload.attachments,
            });
        }
    });
    for name in ["sse", "sse-binary"] {
        let relay = ns.clone();
        ns.on_server_event(name, move |payload, server_ack| {
            relay.broadcast().local().emit(
                "sse-received",
                Payload {
                    args: vec![json!({"event": name, "args": payload.args})],
                    attachments: payload.attachments,
                },
            );
            if let Some(server_ack) = server_ack {
                server_ack.send(json!(format!("ack-{name}")));
            }
        });
    }
}

#[tokio::main]
async fn main() {
    // Logs on stderr, filtered by RUST_LOG (off unless set), for the tests' diagnostics.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let (port, redis) = main_args();
    let io = match redis_link(redis).await {
        Some(link) => Io::with_adapter(IoConfig::default(), link.factory()),
        None => Io::new(IoConfig::default()),
    };
    install(&io.of("/"));
    let admin = io.of("/admin");
    admin.use_middleware(|socket| async move {
        if socket.handshake().auth.get("token") == Some(&json!("secret")) {
            Ok(())
        } else {
            Err(ConnectError::with_data(
                "unauthorized",
                json!({"reason": "invalid token"}),
            ))
        }
    });
    install(&admin);
    io.dynamic_namespace(
        |name| {
            name.strip_prefix("/dyn-").is_some_and(|digits| {
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            })
        },
        install,
    );
    let listener = match tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
    {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("cannot listen on port {port}: {error}");
            std::process::exit(1);
        }
    };
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!("interop server listening on {address}");
    io.serve(listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
}
