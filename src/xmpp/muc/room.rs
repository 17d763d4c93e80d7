//! A room's state, I/O-free: its configuration, affiliations, occupants,
//! subject and recent history; the XEP-0045 permission rules (§5, §9–10)
//! and the history limits of a join (§7.2.15). The stanzas built from it are
//! in [`super::occupant`], [`super::admin`] and [`super::form`].

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::xmpp::element::Element;
use crate::xmpp::stanza::{Jid, StanzaError};

/// A user's long-lived standing in a room (§5.2). Ordered by rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn name(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// An occupant's standing for the visit (§5.1). Ordered by rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// Who sees occupants' real JIDs (`muc#roomconfig_whois`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Whois {
    Moderators,
    Anyone,
}

/// Who may send private messages (`muc#roomconfig_allowpm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllowPm {
    Anyone,
    Participants,
    Moderators,
    Nobody,
}

impl AllowPm {
    pub fn name(self) -> &'static str {
        match self {
            AllowPm::Anyone => "anyone",
            AllowPm::Participants => "participants",
            AllowPm::Moderators => "moderators",
            AllowPm::Nobody => "none",
        }
    }

    pub fn parse(s: &str) -> Option<AllowPm> {
        Some(match s {
            "anyone" => AllowPm::Anyone,
            "participants" => AllowPm::Participants,
            "moderators" => AllowPm::Moderators,
            "none" => AllowPm::Nobody,
            _ => return None,
        })
    }

    /// Whether an occupant with `role` may send one.
    pub fn allows(self, role: Role) -> bool {
        match self {
            AllowPm::Anyone => role >= Role::Visitor,
            AllowPm::Participants => role >= Role::Participant,
            AllowPm::Moderators => role >= Role::Moderator,
            AllowPm::Nobody => false,
        }
    }
}

/// A room's configuration (`muc#roomconfig`, §10.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub persistent: bool,
    pub public: bool,
    pub members_only: bool,
    pub moderated: bool,
    pub password_protected: bool,
    pub password: String,
    /// Occupants at most.
    pub max_users: usize,
    pub whois: Whois,
    /// Participants (not only moderators) may change the subject.
    pub change_subject: bool,
    pub allow_pm: AllowPm,
    /// Groupchat messages archived (XEP-0313).
    pub mam: bool,
}

impl RoomConfig {
    pub fn new(max_users: usize, mam: bool) -> RoomConfig {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password_protected: false,
            password: String::new(),
            max_users,
            whois: Whois::Moderators,
            change_subject: false,
            allow_pm: AllowPm::Anyone,
            mam,
        }
    }
}

/// What the store keeps of a persistent room (`Tree::MucRooms`, keyed by
/// the room's bare JID).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRoom {
    pub config: RoomConfig,
    pub affiliations: Vec<(String, Affiliation)>,
    pub subject: String,
    pub subject_by: String,
    /// The bare JID that created it (`max_rooms_per_user`).
    pub creator: String,
}

/// Someone in the room.
#[derive(Debug, Clone)]
pub struct Occupant {
    pub nick: String,
    /// The real full JID.
    pub jid: Jid,
    pub role: Role,
    /// The presence's payload as last sent (show, status, caps…), without
    /// the MUC extension.
    pub payload: Vec<Element>,
}

/// A groupchat message kept for the history sent on join.
#[derive(Debug, Clone)]
pub struct Past {
    /// As broadcast (from `room/nick`, no `to`).
    pub message: Element,
    pub at_ms: u64,
    /// Its size as XML (what `maxchars` counts).
    pub chars: usize,
}

/// One room. See the module docs.
#[derive(Debug)]
pub struct Room {
    /// The room's bare JID.
    pub jid: String,
    pub config: RoomConfig,
    pub affiliations: BTreeMap<String, Affiliation>,
    pub subject: String,
    pub subject_by: String,
    pub creator: String,
    /// Created and not yet configured (§10.1): only the owner may enter.
    pub locked: bool,
    pub occupants: Vec<Occupant>,
    pub history: VecDeque<Past>,
}

impl Room {
    pub fn new(jid: String, creator: String, config: RoomConfig) -> Room {
        let mut affiliations = BTreeMap::new();
        affiliations.insert(creator.clone(), Affiliation::Owner);
        Room {
            jid,
            config,
            affiliations,
            subject: String::new(),
            subject_by: String::new(),
            creator,
            locked: true,
            occupants: Vec::new(),
            history: VecDeque::new(),
        }
    }

    pub fn from_stored(jid: String, s: StoredRoom) -> Room {
        Room {
            jid,
            config: s.config,
            affiliations: s.affiliations.into_iter().collect(),
            subject: s.subject,
            subject_by: s.subject_by,
            creator: s.creator,
            locked: false,
            occupants: Vec::new(),
            history: VecDeque::new(),
        }
    }

    pub fn stored(&self) -> StoredRoom {
        StoredRoom {
            config: self.config.clone(),
            affiliations: self
                .affiliations
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            subject: self.subject.clone(),
            subject_by: self.subject_by.clone(),
            creator: self.creator.clone(),
        }
    }

    pub fn affiliation(&self, bare: &str) -> Affiliation {
        self.affiliations
            .get(bare)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    /// Sets an affiliation (`none` removes the entry).
    pub fn set_affiliation(&mut self, bare: &str, a: Affiliation) {
        if a == Affiliation::None {
            self.affiliations.remove(bare);
        } else {
            self.affiliations.insert(bare.to_owned(), a);
        }
    }

    /// The role someone with `a` enters with (§5.1.2 defaults).
    pub fn default_role(&self, a: Affiliation) -> Role {
        match a {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if self.config.moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }

    pub fn by_nick(&self, nick: &str) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.nick == nick)
    }

    pub fn by_jid(&self, full: &Jid) -> Option<&Occupant> {
        self.occupants.iter().find(|o| o.jid == *full)
    }

    pub fn by_jid_mut(&mut self, full: &Jid) -> Option<&mut Occupant> {
        self.occupants.iter_mut().find(|o| o.jid == *full)
    }

    /// Whether `viewer` (an occupant's role, or none) sees real JIDs.
    pub fn shows_jids_to(&self, viewer: Role) -> bool {
        self.config.whois == Whois::Anyone || viewer == Role::Moderator
    }

    /// Keeps a groupchat message for later joiners, at most `max` of them.
    pub fn remember(&mut self, message: Element, at_ms: u64, max: usize) {
        if max == 0 {
            return;
        }
        let chars = message.size_hint();
        self.history.push_back(Past {
            message,
            at_ms,
            chars,
        });
        while self.history.len() > max {
            self.history.pop_front();
        }
    }
}

/// What a joiner asked of the history (`<history/>`, §7.2.15).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryRequest {
    pub max_stanzas: Option<usize>,
    pub max_chars: Option<usize>,
    pub seconds: Option<u64>,
    pub since_ms: Option<u64>,
}

impl HistoryRequest {
    /// From the join's `<history/>`; a value that is not a number is ignored.
    pub fn parse(h: Option<&Element>) -> HistoryRequest {
        let Some(h) = h else {
            return HistoryRequest::default();
        };
        let num = |k: &str| h.attr(k).and_then(|v| v.trim().parse::<u64>().ok());
        HistoryRequest {
            max_stanzas: num("maxstanzas").map(|v| v as usize),
            max_chars: num("maxchars").map(|v| v as usize),
            seconds: num("seconds"),
            since_ms: h
                .attr("since")
                .and_then(|s| crate::xmpp::mam::parse_datetime(s.trim())),
        }
    }

    /// How many of the newest `(at_ms, chars)` entries (oldest first) to
    /// send: every limit given holds.
    pub fn count(&self, entries: &[(u64, usize)], now_ms: u64) -> usize {
        let mut n = 0;
        let mut chars = 0usize;
        for &(at, c) in entries.iter().rev() {
            if self.max_stanzas.is_some_and(|m| n >= m) {
                break;
            }
            if let Some(s) = self.seconds {
                if now_ms.saturating_sub(at) > s.saturating_mul(1000) {
                    break;
                }
            }
            if self.since_ms.is_some_and(|since| at <= since) {
                break;
            }
            chars = chars.saturating_add(c);
            if self.max_chars.is_some_and(|m| chars > m) {
                break;
            }
            n += 1;
        }
        n
    }
}

/// Whether an actor may change the role of an occupant to `new` (§8.2–8.6,
/// §9.6–9.7): a moderator kicks, voices and devoices; only an admin or
/// owner grants or revokes moderator; nobody acts on an occupant whose
/// affiliation is admin or owner (or the actor's own rank or above) except
/// in the ways the XEP allows.
pub fn may_set_role(
    actor_aff: Affiliation,
    actor_role: Role,
    target_aff: Affiliation,
    target_role: Role,
    new: Role,
) -> Result<(), StanzaError> {
    if actor_role != Role::Moderator {
        return Err(StanzaError::Forbidden);
    }
    let admin = actor_aff >= Affiliation::Admin;
    if new == Role::Moderator || target_role == Role::Moderator {
        // Granting or revoking moderator is for admins and owners (§9.6–9.7).
        if !admin {
            return Err(StanzaError::NotAllowed);
        }
    }
    // An admin or owner is never kicked or demoted by role (§8.2, §9.7: the
    // affiliation must change first), and nobody acts on a higher rank.
    if target_aff >= Affiliation::Admin && new < Role::Moderator {
        return Err(StanzaError::NotAllowed);
    }
    if target_aff > actor_aff && target_aff >= Affiliation::Admin {
        return Err(StanzaError::NotAllowed);
    }
    Ok(())
}

/// Whether an actor with `actor` may change someone's affiliation from
/// `old` to `new` (§9, §10): admins manage members and outcasts below
/// admin, owners everything.
pub fn may_set_affiliation(
    actor: Affiliation,
    old: Affiliation,
    new: Affiliation,
) -> Result<(), StanzaError> {
    match actor {
        Affiliation::Owner => Ok(()),
        Affiliation::Admin => {
            if new >= Affiliation::Admin {
                Err(StanzaError::Forbidden)
            } else if old >= Affiliation::Admin {
                Err(StanzaError::NotAllowed)
            } else {
                Ok(())
            }
        }
        _ => Err(StanzaError::Forbidden),
    }
}

/// Who may read the list of an affiliation (§9.5, §10.5, §10.8, §9.8).
pub fn may_list_affiliation(actor: Affiliation, list: Affiliation) -> bool {
    match list {
        Affiliation::Owner | Affiliation::Admin => actor >= Affiliation::Admin,
        _ => actor >= Affiliation::Admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Affiliation as A;
    use Role as R;

    #[test]
    fn history_limits() {
        // Ten messages a second apart, 100 chars each; now is at the last.
        let e: Vec<(u64, usize)> = (0..10).map(|i| (1_000 * i, 100)).collect();
        let now = 9_000;
        let none = HistoryRequest::default();
        assert_eq!(none.count(&e, now), 10);
        let stanzas = |n| HistoryRequest {
            max_stanzas: Some(n),
            ..Default::default()
        };
        assert_eq!(stanzas(0).count(&e, now), 0);
        assert_eq!(stanzas(3).count(&e, now), 3);
        assert_eq!(stanzas(30).count(&e, now), 10);
        let chars = HistoryRequest {
            max_chars: Some(250),
            ..Default::default()
        };
        assert_eq!(chars.count(&e, now), 2);
        let secs = HistoryRequest {
            seconds: Some(3),
            ..Default::default()
        };
        assert_eq!(secs.count(&e, now), 4);
        let since = HistoryRequest {
            since_ms: Some(6_500),
            ..Default::default()
        };
        assert_eq!(since.count(&e, now), 3);
        // Every limit holds at once.
        let both = HistoryRequest {
            max_stanzas: Some(5),
            seconds: Some(2),
            ..Default::default()
        };
        assert_eq!(both.count(&e, now), 3);
        assert_eq!(none.count(&[], now), 0);
    }

    #[test]
    fn history_request_parse() {
        let h = Element::new("history", super::super::NS_MUC)
            .with_attr("maxstanzas", "0")
            .with_attr("maxchars", "x")
            .with_attr("since", "1970-01-01T00:00:10Z");
        let r = HistoryRequest::parse(Some(&h));
        assert_eq!(r.max_stanzas, Some(0));
        assert_eq!(r.max_chars, None);
        assert_eq!(r.since_ms, Some(10_000));
        assert_eq!(HistoryRequest::parse(None), HistoryRequest::default());
    }

    #[test]
    fn role_permissions() {
        // A participant kicks nobody.
        assert_eq!(
            may_set_role(A::Member, R::Participant, A::None, R::Participant, R::None),
            Err(StanzaError::Forbidden)
        );
        // A moderator kicks and voices ordinary occupants.
        assert_eq!(
            may_set_role(A::None, R::Moderator, A::None, R::Participant, R::None),
            Ok(())
        );
        assert_eq!(
            may_set_role(A::None, R::Moderator, A::None, R::Visitor, R::Participant),
            Ok(())
        );
        // Only admins and owners grant or revoke moderator.
        assert_eq!(
            may_set_role(
                A::None,
                R::Moderator,
                A::Member,
                R::Participant,
                R::Moderator
            ),
            Err(StanzaError::NotAllowed)
        );
        assert_eq!(
            may_set_role(
                A::Admin,
                R::Moderator,
                A::Member,
                R::Participant,
                R::Moderator
            ),
            Ok(())
        );
        // Admins and owners are not kicked by role.
        assert_eq!(
            may_set_role(A::Owner, R::Moderator, A::Admin, R::Moderator, R::None),
            Err(StanzaError::NotAllowed)
        );
        assert_eq!(
            may_set_role(A::Admin, R::Moderator, A::Owner, R::Moderator, R::None),
            Err(StanzaError::NotAllowed)
        );
    }

    #[test]
    fn affiliation_permissions() {
        assert_eq!(may_set_affiliation(A::Owner, A::Owner, A::None), Ok(()));
        assert_eq!(
            may_set_affiliation(A::Admin, A::None, A::Outcast),
            Ok(()),
            "admins ban"
        );
        assert_eq!(may_set_affiliation(A::Admin, A::Outcast, A::Member), Ok(()));
        assert_eq!(
            may_set_affiliation(A::Admin, A::Member, A::Admin),
            Err(StanzaError::Forbidden)
        );
        assert_eq!(
            may_set_affiliation(A::Admin, A::Owner, A::Outcast),
            Err(StanzaError::NotAllowed)
        );
        assert_eq!(
            may_set_affiliation(A::Member, A::None, A::Member),
            Err(StanzaError::Forbidden)
        );
        assert!(may_list_affiliation(A::Admin, A::Outcast));
        assert!(!may_list_affiliation(A::Member, A::Member));
    }

    #[test]
    fn roles_and_pms() {
        let mut r = Room::new("r@c.x".into(), "a@x".into(), RoomConfig::new(10, true));
        assert_eq!(r.affiliation("a@x"), A::Owner);
        assert_eq!(r.default_role(A::None), R::Participant);
        r.config.moderated = true;
        assert_eq!(r.default_role(A::None), R::Visitor);
        assert_eq!(r.default_role(A::Member), R::Participant);
        r.set_affiliation("a@x", A::None);
        assert!(r.affiliations.is_empty());
        assert!(AllowPm::Participants.allows(R::Participant));
        assert!(!AllowPm::Participants.allows(R::Visitor));
        assert!(!AllowPm::Nobody.allows(R::Moderator));
    }

    #[test]
    fn history_is_bounded() {
        let mut r = Room::new("r@c.x".into(), "a@x".into(), RoomConfig::new(10, true));
        for i in 0..5 {
            r.remember(Element::new("message", "jabber:client"), i, 3);
        }
        assert_eq!(r.history.len(), 3);
        assert_eq!(r.history[0].at_ms, 2);
        r.remember(Element::new("message", "jabber:client"), 9, 0);
        assert_eq!(r.history.len(), 3);
    }
}
