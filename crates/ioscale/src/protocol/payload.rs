//! Event arguments as the application sees them: JSON values plus binary attachments.

use bytes::Bytes;
use serde_json::{Value, json};

use super::socketio::Packet;

/// The arguments of an event or ack. Binary data sits in `attachments`; the JSON refers
/// to attachment `n` with a placeholder `{"_placeholder":true,"num":n}`, as on the wire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    /// The JSON arguments, placeholders included.
    pub args: Vec<Value>,
    /// The binary attachments, indexed by the placeholders' `num`.
    pub attachments: Vec<Bytes>,
}

impl Payload {
    /// No arguments.
    pub fn empty() -> Payload {
        Payload::default()
    }

    /// Several JSON arguments.
    pub fn args(args: Vec<Value>) -> Payload {
        Payload {
            args,
            attachments: Vec::new(),
        }
    }

    /// Adds a binary attachment and returns the placeholder to put where it belongs.
    pub fn attach(&mut self, data: impl Into<Bytes>) -> Value {
        self.attachments.push(data.into());
        json!({"_placeholder": true, "num": self.attachments.len() - 1})
    }

    /// Appends an argument.
    pub fn push(&mut self, arg: Value) -> &mut Self {
        self.args.push(arg);
        self
    }

    /// The binary attachment a placeholder value refers to, if it is one.
    pub fn binary(&self, value: &Value) -> Option<&Bytes> {
        let object = value.as_object()?;
        if object.get("_placeholder") != Some(&Value::Bool(true)) {
            return None;
        }
        let num = object.get("num")?.as_u64()?;
        self.attachments.get(usize::try_from(num).ok()?)
    }

    /// Takes the args out of a decoded Event/Ack packet (the event name stays first for events).
    pub(crate) fn from_packet(packet: Packet) -> Payload {
        let args = match packet.data {
            Some(Value::Array(args)) => args,
            Some(other) => vec![other],
            None => Vec::new(),
        };
        Payload {
            args,
            attachments: packet.attachments,
        }
    }
}

impl From<Value> for Payload {
    /// One JSON argument.
    fn from(value: Value) -> Payload {
        Payload::args(vec![value])
    }
}

impl From<()> for Payload {
    fn from(_: ()) -> Payload {
        Payload::empty()
    }
}

impl From<&str> for Payload {
    fn from(text: &str) -> Payload {
        Payload::from(Value::from(text))
    }
}

impl From<Bytes> for Payload {
    /// One binary argument.
    fn from(data: Bytes) -> Payload {
        let mut payload = Payload::empty();
        let placeholder = payload.attach(data);
        payload.args.push(placeholder);
        payload
    }
}
