//! XEP-0313 on the IM layer: which routed messages are archived, and the
//! archive's iqs — the query (with XEP-0059 paging), its form, and the
//! preferences. The archive itself is [`super::mam`].

use super::element::Element;
use super::im::{Effects, ImServer, ImSession};
use super::mam::{
    id_ms, id_text, parse_datetime, parse_id, Policy, Prefs, Query, NS_DATA, NS_MAM, NS_RSM,
};
use super::stanza::{iq_result, Jid, StanzaError, NS_DELAY};
use super::stream::NS_CLIENT;
use crate::auth::BareJid;

/// Results per page when the client does not say.
const DEFAULT_PAGE: usize = 50;

/// The query form's fields (§4.1.1).
const FIELDS: &[(&str, &str)] = &[
    ("with", "jid-single"),
    ("start", "text-single"),
    ("end", "text-single"),
    ("before-id", "text-single"),
    ("after-id", "text-single"),
];

impl ImServer {
    /// Whether a routed message is archived at all, before preferences: a
    /// `chat` or `normal` message with a body (§5.1.1).
    pub(crate) fn archivable(el: &Element, ty: &str) -> bool {
        matches!(ty, "chat" | "normal") && el.child("body", NS_CLIENT).is_some()
    }

    /// Whether `owner`'s preferences archive messages with `remote`.
    pub(crate) async fn archives_with(&self, owner: &BareJid, remote: &Jid) -> bool {
        let o = owner.to_string();
        let prefs = match self.mam.prefs(&o, || self.online(&o)).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "could not read archiving preferences");
                return false;
            }
        };
        let r = remote.bare().to_string();
        match prefs.decide(&r) {
            Some(d) => d,
            None => matches!(self.roster.get(owner, &r).await, Ok(Some(i)) if !i.hidden),
        }
    }

    /// The archive's iqs, from the account's own sessions.
    pub(crate) async fn mam_iq(
        &self,
        s: &mut ImSession,
        iq: &Element,
        p: &Element,
        fx: &mut Effects,
    ) {
        match (iq.attr("type"), p.name.as_str()) {
            (_, "query") => {
                let (owner, me) = (s.user.to_string(), s.jid.to_string());
                self.mam_iq_for(&owner, &me, iq, p, fx).await
            }
            (Some("get"), "prefs") => {
                let owner = s.user.to_string();
                match self.mam.prefs(&owner, || self.online(&owner)).await {
                    Ok(prefs) => fx.reply(iq_result(iq, Some(prefs_element(&prefs)))),
                    Err(e) => fx.internal(iq, e),
                }
            }
            (Some("set"), "prefs") => match parse_prefs(p) {
                Some(prefs) => {
                    self.mam.set_prefs(&s.user.to_string(), prefs.clone()).await;
                    fx.flush = true;
                    fx.reply(iq_result(iq, Some(prefs_element(&prefs))));
                }
                None => fx.error(iq, StanzaError::BadRequest),
            },
            _ => fx.error(iq, StanzaError::BadRequest),
        }
    }

    /// A `<query/>` iq of the archive `owner` (an account's or a room's
    /// bare JID) from `me`, allowed to read it: the form, or a query.
    pub(crate) async fn mam_iq_for(
        &self,
        owner: &str,
        me: &str,
        iq: &Element,
        p: &Element,
        fx: &mut Effects,
    ) {
        match (iq.attr("type"), p.name.as_str()) {
            (Some("get"), "query") => fx.reply(iq_result(iq, Some(query_form()))),
            (Some("set"), "query") => self.mam_query(owner, me, iq, p, fx).await,
            _ => fx.error(iq, StanzaError::BadRequest),
        }
    }

    /// §4: results as messages, then the `<fin/>`.
    async fn mam_query(&self, owner: &str, me: &str, iq: &Element, p: &Element, fx: &mut Effects) {
        let max_page = self.mam.max_page;
        let q = match parse_query(p, max_page) {
            Ok(q) => q,
            Err(e) => return fx.error(iq, e),
        };
        // Ids a page is anchored to must be in this archive (XEP-0059 §2.5).
        for id in [q.query.after_id, q.query.before_id].into_iter().flatten() {
            match self.mam.has(owner, id).await {
                Ok(true) => {}
                Ok(false) => return fx.error(iq, StanzaError::ItemNotFound),
                Err(e) => return fx.internal(iq, e),
            }
        }
        let page = match self.mam.page(owner, &q.query).await {
            Ok(p) => p,
            Err(e) => return fx.internal(iq, e),
        };
        for (id, m) in &page.items {
            let Some(original) = super::stream::read_back(&m.stanza) else {
                tracing::error!("an archived message could not be read back");
                continue;
            };
            let stamp = crate::ctl::rfc3339(id_ms(*id) / 1000);
            let forwarded = Element::new("forwarded", super::carbons::NS_FORWARD)
                .with_child(Element::new("delay", NS_DELAY).with_attr("stamp", stamp))
                .with_child(original);
            let mut result = Element::new("result", NS_MAM).with_attr("id", id_text(*id));
            if let Some(qid) = &q.queryid {
                result.set_attr("queryid", qid.clone());
            }
            result.push_child(forwarded);
            fx.reply(
                Element::new("message", NS_CLIENT)
                    .with_attr("from", owner)
                    .with_attr("to", me)
                    .with_child(result),
            );
        }
        let mut set = Element::new("set", NS_RSM);
        if let (Some((first, _)), Some((last, _))) = (page.items.first(), page.items.last()) {
            set.push_child(Element::new("first", NS_RSM).with_text(id_text(*first)));
            set.push_child(Element::new("last", NS_RSM).with_text(id_text(*last)));
        } else {
            set.push_child(Element::new("count", NS_RSM).with_text("0"));
        }
        let mut fin = Element::new("fin", NS_MAM).with_child(set);
        if page.complete {
            fin.set_attr("complete", "true");
        }
        fx.reply(iq_result(iq, Some(fin)));
    }
}

/// A parsed query: the filters and page, and the client's query id.
struct Parsed {
    query: Query,
    queryid: Option<String>,
}

fn parse_query(p: &Element, max_page: usize) -> Result<Parsed, StanzaError> {
    let mut q = Query {
        max: DEFAULT_PAGE.min(max_page),
        ..Query::default()
    };
    let bad = StanzaError::BadRequest;
    if let Some(x) = p.child("x", NS_DATA) {
        for f in x.children_named("field", NS_DATA) {
            let value = f
                .child("value", NS_DATA)
                .map(|v| v.text().trim().to_owned())
                .unwrap_or_default();
            let var = f.attr("var").unwrap_or("");
            if value.is_empty() && var != "FORM_TYPE" {
                // An empty field filters nothing.
                continue;
            }
            match var {
                "FORM_TYPE" if value == NS_MAM => {}
                "with" => q.with = Some(Jid::parse(&value).map_err(|_| bad)?),
                "start" => q.start_ms = Some(parse_datetime(&value).ok_or(bad)?),
                "end" => q.end_ms = Some(parse_datetime(&value).ok_or(bad)?),
                // An id of another form is in no archive.
                "after-id" => q.after_id = Some(parse_id(&value).ok_or(StanzaError::ItemNotFound)?),
                "before-id" => {
                    q.before_id = Some(parse_id(&value).ok_or(StanzaError::ItemNotFound)?)
                }
                // §4.1.1: a field the server does not know is an error.
                _ => return Err(bad),
            }
        }
    }
    if let Some(set) = p.child("set", NS_RSM) {
        if let Some(m) = set.child("max", NS_RSM) {
            q.max = m
                .text()
                .trim()
                .parse::<usize>()
                .map_err(|_| bad)?
                .min(max_page);
        }
        if let Some(a) = set.child("after", NS_RSM) {
            let id = parse_id(a.text().trim()).ok_or(StanzaError::ItemNotFound)?;
            q.after_id = Some(q.after_id.map_or(id, |x| x.max(id)));
        }
        if let Some(b) = set.child("before", NS_RSM) {
            q.backwards = true;
            let t = b.text();
            if !t.trim().is_empty() {
                let id = parse_id(t.trim()).ok_or(StanzaError::ItemNotFound)?;
                q.before_id = Some(q.before_id.map_or(id, |x| x.min(id)));
            }
        }
        if set.child("index", NS_RSM).is_some() {
            return Err(StanzaError::FeatureNotImplemented);
        }
    }
    Ok(Parsed {
        query: q,
        queryid: p.attr("queryid").map(str::to_owned),
    })
}

/// The form a client fills in (§4.1.1), answering `<query/>` get.
fn query_form() -> Element {
    let mut x = Element::new("x", NS_DATA)
        .with_attr("type", "form")
        .with_child(
            Element::new("field", NS_DATA)
                .with_attr("type", "hidden")
                .with_attr("var", "FORM_TYPE")
                .with_child(Element::new("value", NS_DATA).with_text(NS_MAM)),
        );
    for (var, ty) in FIELDS {
        x.push_child(
            Element::new("field", NS_DATA)
                .with_attr("type", *ty)
                .with_attr("var", *var),
        );
    }
    Element::new("query", NS_MAM).with_child(x)
}

fn prefs_element(p: &Prefs) -> Element {
    let list = |name: &str, jids: &std::collections::BTreeSet<String>| {
        let mut e = Element::new(name, NS_MAM);
        for j in jids {
            e.push_child(Element::new("jid", NS_MAM).with_text(j.clone()));
        }
        e
    };
    Element::new("prefs", NS_MAM)
        .with_attr("default", p.default.name())
        .with_child(list("always", &p.always))
        .with_child(list("never", &p.never))
}

/// §6: `default` is required; `always`/`never` replace the lists.
fn parse_prefs(p: &Element) -> Option<Prefs> {
    let default = Policy::parse(p.attr("default")?)?;
    let list = |name: &str| -> Option<std::collections::BTreeSet<String>> {
        let mut out = std::collections::BTreeSet::new();
        if let Some(e) = p.child(name, NS_MAM) {
            for j in e.children_named("jid", NS_MAM) {
                out.insert(Jid::parse(j.text().trim()).ok()?.bare().to_string());
            }
        }
        Some(out)
    };
    Some(Prefs {
        default,
        always: list("always")?,
        never: list("never")?,
    })
}
