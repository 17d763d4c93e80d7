//! Topic aliases the server sets towards one client (MQTT 5 3.3.2.3.4).

/// Topic aliases towards one client: at most the client's Topic Alias
/// Maximum and the server's own (`topic_alias_maximum`), the least
/// recently used one reassigned when all are taken. Empty (no allocation)
/// for a client that allows none.
#[derive(Default)]
pub(super) struct OutAliases {
    max: u16,
    /// (topic, alias), most recently used last.
    table: Vec<(String, u16)>,
}

impl OutAliases {
    pub(super) fn new(max: u16) -> OutAliases {
        OutAliases {
            max,
            table: Vec::new(),
        }
    }

    /// The alias for `topic`, and whether the topic must go with it (a
    /// new or reassigned alias); `None` when the client allows none.
    /// Nothing changes until [`Self::sent`]: a message chosen for and then
    /// not sent must not leave the client an alias it never saw.
    pub(super) fn choose(&self, topic: &str) -> Option<(u16, bool)> {
        if self.max == 0 || topic.is_empty() {
            return None;
        }
        if let Some(e) = self.table.iter().find(|e| e.0 == topic) {
            return Some((e.1, false));
        }
        if self.table.len() < usize::from(self.max) {
            return Some((self.table.len() as u16 + 1, true));
        }
        self.table.first().map(|e| (e.1, true))
    }

    /// `topic` went out with `alias` (as [`Self::choose`] said): it becomes
    /// the most recently used.
    pub(super) fn sent(&mut self, topic: &str, (alias, with_topic): (u16, bool)) {
        match self.table.iter().position(|e| e.1 == alias) {
            Some(i) => {
                let mut e = self.table.remove(i);
                if with_topic {
                    // The old topic's buffer is reused.
                    e.0.clear();
                    e.0.push_str(topic);
                }
                self.table.push(e);
            }
            None => self.table.push((topic.to_string(), alias)),
        }
    }
}
