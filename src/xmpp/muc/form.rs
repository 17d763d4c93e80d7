//! The room configuration form (`muc#roomconfig`, XEP-0045 §10.2 and §15.5.3)
//! and the room information form (`muc#roominfo`, §15.5.4): built from and
//! parsed into [`RoomConfig`], I/O-free.

use crate::xmpp::element::Element;
use crate::xmpp::mam::NS_DATA;
use crate::xmpp::stanza::StanzaError;

use super::room::{AllowPm, RoomConfig, Whois};

pub const NS_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
pub const NS_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";

const F_NAME: &str = "muc#roomconfig_roomname";
const F_DESC: &str = "muc#roomconfig_roomdesc";
const F_PERSISTENT: &str = "muc#roomconfig_persistentroom";
const F_PUBLIC: &str = "muc#roomconfig_publicroom";
const F_MEMBERS: &str = "muc#roomconfig_membersonly";
const F_MODERATED: &str = "muc#roomconfig_moderatedroom";
const F_PROTECTED: &str = "muc#roomconfig_passwordprotectedroom";
const F_SECRET: &str = "muc#roomconfig_roomsecret";
const F_MAXUSERS: &str = "muc#roomconfig_maxusers";
const F_WHOIS: &str = "muc#roomconfig_whois";
const F_SUBJECT: &str = "muc#roomconfig_changesubject";
const F_ALLOWPM: &str = "muc#roomconfig_allowpm";
const F_LOGGING: &str = "muc#roomconfig_enablelogging";

fn field(var: &str, ty: &str, label: &str, values: &[&str]) -> Element {
    let mut f = Element::new("field", NS_DATA)
        .with_attr("var", var)
        .with_attr("type", ty)
        .with_attr("label", label);
    for v in values {
        f.push_child(Element::new("value", NS_DATA).with_text(*v));
    }
    f
}

fn options(mut f: Element, opts: &[(&str, &str)]) -> Element {
    for (value, label) in opts {
        f.push_child(
            Element::new("option", NS_DATA)
                .with_attr("label", *label)
                .with_child(Element::new("value", NS_DATA).with_text(*value)),
        );
    }
    f
}

fn boolean(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

/// The form an owner fills in, showing the current values; `max_users` is
/// the service's ceiling.
pub fn config_form(c: &RoomConfig, max_users: usize) -> Element {
    let max = c.max_users.to_string();
    let ceiling = max_users.to_string();
    let mut x = Element::new("x", NS_DATA)
        .with_attr("type", "form")
        .with_child(Element::new("title", NS_DATA).with_text("Room configuration"))
        .with_child(field("FORM_TYPE", "hidden", "", &[NS_ROOMCONFIG]))
        .with_child(field(F_NAME, "text-single", "Room name", &[&c.name]))
        .with_child(field(
            F_DESC,
            "text-single",
            "Description",
            &[&c.description],
        ))
        .with_child(field(
            F_PERSISTENT,
            "boolean",
            "Persistent",
            &[boolean(c.persistent)],
        ))
        .with_child(field(
            F_PUBLIC,
            "boolean",
            "Listed in the directory",
            &[boolean(c.public)],
        ))
        .with_child(field(
            F_MEMBERS,
            "boolean",
            "Members only",
            &[boolean(c.members_only)],
        ))
        .with_child(field(
            F_MODERATED,
            "boolean",
            "Moderated",
            &[boolean(c.moderated)],
        ))
        .with_child(field(
            F_PROTECTED,
            "boolean",
            "Password protected",
            &[boolean(c.password_protected)],
        ))
        .with_child(field(F_SECRET, "text-private", "Password", &[&c.password]));
    let sizes: Vec<String> = [10, 20, 30, 50, 100, 200, 500, 1000]
        .into_iter()
        .filter(|n| *n < max_users)
        .map(|n| n.to_string())
        .chain(std::iter::once(ceiling))
        .collect();
    let opts: Vec<(&str, &str)> = sizes.iter().map(|s| (s.as_str(), s.as_str())).collect();
    x.push_child(options(
        field(F_MAXUSERS, "list-single", "Maximum occupants", &[&max]),
        &opts,
    ));
    let whois = match c.whois {
        Whois::Moderators => "moderators",
        Whois::Anyone => "anyone",
    };
    x.push_child(options(
        field(F_WHOIS, "list-single", "Who sees real JIDs", &[whois]),
        &[("moderators", "Moderators"), ("anyone", "Anyone")],
    ));
    x.push_child(field(
        F_SUBJECT,
        "boolean",
        "Occupants may change the subject",
        &[boolean(c.change_subject)],
    ));
    x.push_child(options(
        field(
            F_ALLOWPM,
            "list-single",
            "Who may send private messages",
            &[c.allow_pm.name()],
        ),
        &[
            ("anyone", "Anyone"),
            ("participants", "Participants"),
            ("moderators", "Moderators"),
            ("none", "Nobody"),
        ],
    ));
    x.push_child(field(
        F_LOGGING,
        "boolean",
        "Archive messages (XEP-0313)",
        &[boolean(c.mam)],
    ));
    x
}

fn parse_bool(v: &str) -> Result<bool, StanzaError> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(StanzaError::NotAcceptable),
    }
}

/// Applies a submitted form to `c` (fields left out keep their value).
/// `max_users` is the service's ceiling, `max_name` the longest room name.
/// A value out of range is `not-acceptable`, a form of another type
/// `bad-request`.
pub fn apply_submit(
    x: &Element,
    c: &RoomConfig,
    max_users: usize,
    max_name: usize,
) -> Result<RoomConfig, StanzaError> {
    let mut c = c.clone();
    for f in x.children_named("field", NS_DATA) {
        let Some(var) = f.attr("var") else { continue };
        let value = f
            .child("value", NS_DATA)
            .map(|v| v.text())
            .unwrap_or_default();
        let v = value.trim();
        match var {
            "FORM_TYPE" if v != NS_ROOMCONFIG => return Err(StanzaError::BadRequest),
            "FORM_TYPE" => {}
            F_NAME => {
                if value.chars().count() > max_name {
                    return Err(StanzaError::NotAcceptable);
                }
                c.name = value.clone();
            }
            F_DESC => {
                if value.len() > 4096 {
                    return Err(StanzaError::NotAcceptable);
                }
                c.description = value.clone();
            }
            F_PERSISTENT => c.persistent = parse_bool(v)?,
            F_PUBLIC => c.public = parse_bool(v)?,
            F_MEMBERS => c.members_only = parse_bool(v)?,
            F_MODERATED => c.moderated = parse_bool(v)?,
            F_PROTECTED => c.password_protected = parse_bool(v)?,
            F_SECRET => {
                if value.len() > 1024 {
                    return Err(StanzaError::NotAcceptable);
                }
                c.password = value.clone();
            }
            F_MAXUSERS => {
                let n = if v == "none" {
                    max_users
                } else {
                    v.parse::<usize>().map_err(|_| StanzaError::NotAcceptable)?
                };
                if n == 0 || n > max_users {
                    return Err(StanzaError::NotAcceptable);
                }
                c.max_users = n;
            }
            F_WHOIS => {
                c.whois = match v {
                    "moderators" => Whois::Moderators,
                    "anyone" => Whois::Anyone,
                    _ => return Err(StanzaError::NotAcceptable),
                }
            }
            F_SUBJECT => c.change_subject = parse_bool(v)?,
            F_ALLOWPM => c.allow_pm = AllowPm::parse(v).ok_or(StanzaError::NotAcceptable)?,
            F_LOGGING | "mam" | "muc#roomconfig_enablearchiving" => c.mam = parse_bool(v)?,
            // Fields of other servers' forms are left alone (XEP-0004 lets a
            // form carry what the receiver does not use).
            _ => {}
        }
    }
    if c.password_protected && c.password.is_empty() {
        return Err(StanzaError::NotAcceptable);
    }
    Ok(c)
}

/// The `muc#roominfo` form of a room's disco#info (§15.5.4).
pub fn info_form(c: &RoomConfig, occupants: usize, subject: &str) -> Element {
    let n = occupants.to_string();
    let mut x = Element::new("x", NS_DATA)
        .with_attr("type", "result")
        .with_child(field("FORM_TYPE", "hidden", "", &[NS_ROOMINFO]))
        .with_child(field(
            "muc#roominfo_description",
            "text-single",
            "Description",
            &[&c.description],
        ))
        .with_child(field(
            "muc#roominfo_occupants",
            "text-single",
            "Number of occupants",
            &[&n],
        ))
        .with_child(field(
            "muc#roominfo_subject",
            "text-single",
            "Subject",
            &[subject],
        ))
        .with_child(field(
            "muc#roominfo_changesubject",
            "boolean",
            "Occupants may change the subject",
            &[boolean(c.change_subject)],
        ));
    if !c.name.is_empty() {
        x.push_child(field(
            "muc#roomconfig_roomname",
            "text-single",
            "Room name",
            &[&c.name],
        ));
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(fields: &[(&str, &str)]) -> Element {
        let mut x = Element::new("x", NS_DATA).with_attr("type", "submit");
        for (var, v) in fields {
            x.push_child(
                Element::new("field", NS_DATA)
                    .with_attr("var", *var)
                    .with_child(Element::new("value", NS_DATA).with_text(*v)),
            );
        }
        x
    }

    #[test]
    fn a_submitted_form_changes_what_it_names() {
        let c = RoomConfig::new(100, true);
        let x = submit(&[
            ("FORM_TYPE", NS_ROOMCONFIG),
            (F_NAME, "Tea party"),
            (F_PERSISTENT, "1"),
            (F_MEMBERS, "true"),
            (F_MAXUSERS, "20"),
            (F_WHOIS, "anyone"),
            (F_ALLOWPM, "moderators"),
            (F_LOGGING, "0"),
            ("muc#roomconfig_lang", "en"),
        ]);
        let n = apply_submit(&x, &c, 100, 50).unwrap();
        assert_eq!(n.name, "Tea party");
        assert!(n.persistent && n.members_only && !n.moderated && !n.mam);
        assert_eq!(n.max_users, 20);
        assert_eq!(n.whois, Whois::Anyone);
        assert_eq!(n.allow_pm, AllowPm::Moderators);
        // An empty submit (an instant room) changes nothing.
        let same = apply_submit(&Element::new("x", NS_DATA), &c, 100, 50).unwrap();
        assert_eq!(same, c);
    }

    #[test]
    fn bad_values_are_refused() {
        let c = RoomConfig::new(100, true);
        let bad = |f: &[(&str, &str)]| apply_submit(&submit(f), &c, 100, 5).unwrap_err();
        assert_eq!(bad(&[(F_PERSISTENT, "yes")]), StanzaError::NotAcceptable);
        assert_eq!(bad(&[(F_MAXUSERS, "101")]), StanzaError::NotAcceptable);
        assert_eq!(bad(&[(F_MAXUSERS, "0")]), StanzaError::NotAcceptable);
        assert_eq!(bad(&[(F_WHOIS, "all")]), StanzaError::NotAcceptable);
        assert_eq!(bad(&[(F_NAME, "too long")]), StanzaError::NotAcceptable);
        assert_eq!(bad(&[(F_PROTECTED, "1")]), StanzaError::NotAcceptable);
        assert_eq!(bad(&[("FORM_TYPE", "urn:other")]), StanzaError::BadRequest);
        let ok = apply_submit(
            &submit(&[(F_PROTECTED, "1"), (F_SECRET, "s3cret")]),
            &c,
            100,
            5,
        )
        .unwrap();
        assert!(ok.password_protected);
        assert_eq!(ok.password, "s3cret");
    }

    #[test]
    fn the_form_shows_the_values_and_parses_back() {
        let mut c = RoomConfig::new(50, false);
        c.name = "n".into();
        c.persistent = true;
        let mut form = config_form(&c, 50);
        form.set_attr("type", "submit");
        assert_eq!(
            apply_submit(&form, &RoomConfig::new(50, true), 50, 10).unwrap(),
            c
        );
    }
}
