//! A room's members. Most rooms have one member (every socket is alone in the room named by
//! its id), so one member is kept inline: a one-entry `HashMap` would allocate 192 bytes.

use std::collections::HashMap;
use std::collections::hash_map;
use std::sync::Arc;

use super::Recipient;
use crate::protocol::Sid;

pub(crate) enum Members {
    One(Sid, Arc<dyn Recipient>),
    /// Empty or several.
    Many(HashMap<Sid, Arc<dyn Recipient>>),
}

impl Members {
    pub(crate) fn new() -> Self {
        Members::Many(HashMap::new())
    }

    /// Adds a member; false when it was already in.
    pub(crate) fn insert(&mut self, sid: Sid, recipient: &Arc<dyn Recipient>) -> bool {
        match self {
            Members::One(one, _) if *one == sid => false,
            Members::One(..) => {
                let Members::One(one, first) = std::mem::replace(self, Members::new()) else {
                    return false;
                };
                *self = Members::Many(HashMap::from([(one, first), (sid, recipient.clone())]));
                true
            }
            Members::Many(many) if many.is_empty() => {
                *self = Members::One(sid, recipient.clone());
                true
            }
            Members::Many(many) => many.insert(sid, recipient.clone()).is_none(),
        }
    }

    /// Removes a member; false when it was not in.
    pub(crate) fn remove(&mut self, sid: &Sid) -> bool {
        match self {
            Members::One(one, _) if one == sid => {
                *self = Members::new();
                true
            }
            Members::One(..) => false,
            Members::Many(many) => {
                let removed = many.remove(sid).is_some();
                if removed && many.capacity() > 2 * many.len().max(4) {
                    many.shrink_to_fit();
                }
                removed
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Members::Many(many) if many.is_empty())
    }

    pub(crate) fn iter(&self) -> Iter<'_> {
        match self {
            Members::One(sid, recipient) => Iter::One(Some((sid, recipient))),
            Members::Many(many) => Iter::Many(many.iter()),
        }
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &Sid> {
        self.iter().map(|(sid, _)| sid)
    }
}

pub(crate) enum Iter<'a> {
    One(Option<(&'a Sid, &'a Arc<dyn Recipient>)>),
    Many(hash_map::Iter<'a, Sid, Arc<dyn Recipient>>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Sid, &'a Arc<dyn Recipient>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::One(one) => one.take(),
            Iter::Many(many) => many.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{AckRoute, SocketInfo};
    use crate::protocol::Frame;

    struct Nobody(Sid);

    impl Recipient for Nobody {
        fn sid(&self) -> Sid {
            self.0
        }
        fn deliver(&self, _: &[Frame], _: bool, _: Option<&AckRoute>) -> bool {
            true
        }
        fn info(&self) -> SocketInfo {
            SocketInfo {
                id: self.0.to_string(),
                handshake: serde_json::Value::Null,
                rooms: Vec::new(),
                data: serde_json::Value::Null,
            }
        }
        fn disconnect(&self, _: bool) {}
    }

    fn member() -> (Sid, Arc<dyn Recipient>) {
        let sid = Sid::random();
        (sid, Arc::new(Nobody(sid)))
    }

    fn sorted(members: &Members) -> Vec<Sid> {
        let mut sids: Vec<Sid> = members.keys().copied().collect();
        sids.sort();
        sids
    }

    #[test]
    fn one_member_inline_then_a_map_then_empty() {
        let (a, ra) = member();
        let (b, rb) = member();
        let mut members = Members::new();
        assert!(members.is_empty());
        assert!(members.insert(a, &ra));
        assert!(matches!(members, Members::One(..)));
        assert!(!members.insert(a, &ra));
        assert!(members.insert(b, &rb));
        let mut both = vec![a, b];
        both.sort();
        assert_eq!(sorted(&members), both);
        assert!(members.remove(&a));
        assert!(!members.remove(&a));
        assert_eq!(sorted(&members), vec![b]);
        assert!(members.remove(&b));
        assert!(members.is_empty());
        assert_eq!(members.iter().count(), 0);
        // Empty again: the next member is inline.
        assert!(members.insert(a, &ra));
        assert!(matches!(members, Members::One(..)));
        assert!(!members.remove(&b));
        assert_eq!(sorted(&members), vec![a]);
    }
}
