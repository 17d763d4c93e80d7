//! XEP-0045 Multi-User Chat on `conference.localhost`, with slixmpp's
//! `xep_0045` as the independent client: three users in one room, history
//! for a late joiner, a ban (301, then 403 on rejoin) and a kick (307), the
//! room made persistent and still there after a restart with its subject
//! and affiliations, and the room's archive (XEP-0313). Raw sockets for the
//! refusals: nick conflict, locked room, members-only, password, max users,
//! a non-occupant's message, a non-owner's configuration, self-ping.

mod common;

use common::slixmpp::run;
use common::xmpp::Raw;
use common::Petrel;

const ROOM: &str = "tea@conference.localhost";

fn server(extra: &str) -> Petrel {
    let p = Petrel::start(extra).with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    p.ctl_ok(&["register", "carol", "localhost", "queen"]);
    p
}

/// Helpers the scripts share (after the common prelude).
const MUC: &str = r#"
from slixmpp import JID
from slixmpp.exceptions import PresenceError, IqError
ROOM = JID('tea@conference.localhost')

def muc_client(jid, pw):
    c = make(jid, pw)
    for x in ('xep_0004', 'xep_0045', 'xep_0059', 'xep_0313', 'xep_0359'):
        c.register_plugin(x)
    return c

def codes(p):
    return sorted(p['muc']['status_codes'])

def form(c, **fields):
    f = c.plugin['xep_0004'].make_form(ftype='submit')
    f.add_field(var='FORM_TYPE', ftype='hidden',
                value='http://jabber.org/protocol/muc#roomconfig')
    for k, v in fields.items():
        f.add_field(var='muc#roomconfig_' + k, value=v)
    return f

def presence_from(c, nick, ty):
    return asyncio.ensure_future(next_event(c, 'muc::%s::presence' % ROOM,
                      lambda p: p['from'].resource == nick and p['type'] == ty))

def groupchat(c, body):
    return asyncio.ensure_future(next_event(c, 'groupchat_message', lambda m: m['body'] == body))
"#;

#[test]
fn three_users_chat_ban_kick_and_the_room_survives_a_restart() {
    let mut p = server("");
    let first = format!(
        "{MUC}{}",
        r#"
async def main():
    alice = await online(muc_client('alice@localhost', 'wonderland'))
    bob = await online(muc_client('bob@localhost', 'builder'))
    carol = await online(muc_client('carol@localhost', 'queen'))
    pres, subj, occ, hist = await alice.plugin['xep_0045'].join_muc_wait(ROOM, 'Alice', timeout=10)
    print('alice joined', codes(pres), pres['muc']['affiliation'], pres['muc']['role'])
    await alice.plugin['xep_0045'].set_room_config(ROOM, form(alice, roomname='Tea party', whois='anyone'))
    pres, subj, occ, hist = await bob.plugin['xep_0045'].join_muc_wait(ROOM, 'Bob', timeout=10)
    print('bob joined', codes(pres), pres['muc']['role'], 'sees', sorted(o['from'].resource for o in occ))
    seen = groupchat(alice, 'hello all')
    mine = groupchat(bob, 'hello all')
    bob.send_message(mto=ROOM, mbody='hello all', mtype='groupchat')
    m = await seen
    print('alice got', m['body'], 'from', m['from'].resource, 'stanza-id by', m['stanza_id']['by'])
    await mine
    print('bob got his own')
    changed = asyncio.ensure_future(next_event(bob, 'groupchat_subject'))
    alice.plugin['xep_0045'].set_subject(ROOM, 'Tea time')
    s = await changed
    print('subject', s['subject'])
    seen = groupchat(bob, 'second')
    alice.send_message(mto=ROOM, mbody='second', mtype='groupchat')
    await seen
    pres, subj, occ, hist = await carol.plugin['xep_0045'].join_muc_wait(ROOM, 'Carol', maxstanzas=5, timeout=10)
    print('carol history', [h['body'] for h in hist], 'subject', subj['subject'])
    print('carol delay from', hist[0]['delay']['from'])
    # A private message from carol to bob, through the room.
    pm = asyncio.ensure_future(next_event(bob, 'message', lambda m: m['type'] == 'chat' and m['body'] == 'psst'))
    carol.send_message(mto=JID('tea@conference.localhost/Bob'), mbody='psst', mtype='chat')
    m = await pm
    print('bob pm from', m['from'])
    gone = presence_from(carol, 'Carol', 'unavailable')
    await alice.plugin['xep_0045'].set_affiliation(ROOM, 'outcast', jid=JID('carol@localhost'), reason='rude')
    p = await gone
    print('carol banned', codes(p))
    try:
        await carol.plugin['xep_0045'].join_muc_wait(ROOM, 'Carol', timeout=10)
        print('carol rejoined')
    except PresenceError as e:
        print('carol refused', e.presence['error']['condition'])
    gone = presence_from(bob, 'Bob', 'unavailable')
    await alice.plugin['xep_0045'].set_role(ROOM, 'Bob', 'none', reason='enough')
    p = await gone
    print('bob kicked', codes(p))
    notice = asyncio.ensure_future(next_event(alice, 'groupchat_config_status', lambda m: 104 in m['muc']['status_codes']))
    await alice.plugin['xep_0045'].set_room_config(ROOM, form(alice, persistentroom='1'))
    await notice
    print('config change announced')
    r = await alice.plugin['xep_0313'].retrieve(jid=ROOM)
    print('archive', [m['mam_result']['forwarded']['stanza']['body'] for m in r['mam']['results']])
    alice.disconnect(); bob.disconnect(); carol.disconnect()
run(main)
"#
    );
    let out = run(&p, &first, &[]);
    for want in [
        "alice joined [110, 170, 201] owner moderator",
        "bob joined [100, 110, 170] participant sees ['Alice', 'Bob']",
        "alice got hello all from Bob stanza-id by tea@conference.localhost",
        "bob got his own",
        "subject Tea time",
        "carol history ['hello all', 'second'] subject Tea time",
        "carol delay from tea@conference.localhost",
        "bob pm from tea@conference.localhost/Carol",
        "carol banned [110, 301]",
        "carol refused forbidden",
        "bob kicked [110, 307]",
        "config change announced",
        "archive ['hello all', 'second']",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    p.stop();
    p.spawn();
    let second = format!(
        "{MUC}{}",
        r#"
async def main():
    alice = await online(muc_client('alice@localhost', 'wonderland'))
    carol = await online(muc_client('carol@localhost', 'queen'))
    info = await alice.plugin['xep_0030'].get_info(jid=ROOM)
    feats = info['disco_info']['features']
    print('persistent', 'muc_persistent' in feats, 'name', [i[3] for i in info['disco_info']['identities']][0])
    items = await alice.plugin['xep_0030'].get_items(jid=JID('conference.localhost'))
    print('listed', sorted((str(i[0]), i[2]) for i in items['disco_items']['items']))
    pres, subj, occ, hist = await alice.plugin['xep_0045'].join_muc_wait(ROOM, 'Alice', timeout=10)
    print('after restart', codes(pres), pres['muc']['affiliation'], 'subject', subj['subject'])
    out = await alice.plugin['xep_0045'].get_affiliation_list(ROOM, 'outcast')
    print('outcasts', [str(j) for j in out])
    try:
        await carol.plugin['xep_0045'].join_muc_wait(ROOM, 'Carol', timeout=10)
        print('carol rejoined')
    except PresenceError as e:
        print('carol still refused', e.presence['error']['condition'])
    r = await alice.plugin['xep_0313'].retrieve(jid=ROOM)
    print('archive', [m['mam_result']['forwarded']['stanza']['body'] for m in r['mam']['results']])
    alice.disconnect(); carol.disconnect()
run(main)
"#
    );
    let out = run(&p, &second, &[]);
    for want in [
        "persistent True name Tea party",
        "listed [('tea@conference.localhost', 'Tea party')]",
        "after restart [100, 110, 170] owner subject Tea time",
        "outcasts ['carol@localhost']",
        "carol still refused forbidden",
        "archive ['hello all', 'second']",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

/// Sends a join; returns what arrived up to the self-presence (status 110)
/// or the error.
fn join(c: &mut Raw, nick: &str, extra: &str) -> String {
    c.send(&format!(
        "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>{extra}</x></presence>"
    ));
    let mut all = String::new();
    loop {
        let p = c.expect("</presence>");
        all.push_str(&p);
        if p.contains("type='error'") || p.contains("code='110'") {
            return all;
        }
    }
}

/// The answer to the stanza with `id`: up to its id for a result, up to
/// the end of its `<error/>` for an error.
fn answer(c: &mut Raw, id: &str) -> String {
    let head = c.expect(&format!("id='{id}'"));
    let tag = &head[head.rfind('<').unwrap_or(0)..];
    if tag.contains("type='error'") {
        head.clone() + &c.expect("</error>")
    } else {
        head
    }
}

/// Creates the room as alice and configures it with `fields` (var, value).
fn create(alice: &mut Raw, fields: &[(&str, &str)]) {
    let got = join(alice, "Alice", "");
    assert!(got.contains("code='201'"), "{got}");
    // The empty subject ends the join.
    alice.expect("</message>");
    let mut form = String::from(
        "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>",
    );
    for (var, v) in fields {
        form.push_str(&format!(
            "<field var='muc#roomconfig_{var}'><value>{v}</value></field>"
        ));
    }
    alice.send(&format!(
        "<iq type='set' id='cfg' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'>{form}</x></query></iq>"
    ));
    let r = answer(alice, "cfg");
    assert!(r.contains("type='result'"), "{r}");
}

#[test]
fn refusals_of_joins_messages_and_configuration() {
    let p = server("[muc]\nmax_users = 2\n");
    let addr = p.addrs["c2s"][0];
    let mut alice = Raw::login(addr, "alice", "wonderland", "a");
    let mut bob = Raw::login(addr, "bob", "builder", "b");
    let mut carol = Raw::login(addr, "carol", "queen", "c");

    // A locked room (created, not configured) is not there for others.
    let got = join(&mut alice, "Alice", "");
    assert!(got.contains("code='201'"), "{got}");
    alice.expect("</message>");
    let got = join(&mut bob, "Bob", "");
    assert!(
        got.contains("type='error'") && got.contains("<item-not-found"),
        "{got}"
    );
    // An instant room.
    alice.send(&format!(
        "<iq type='set' id='inst' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'/></query></iq>"
    ));
    assert!(answer(&mut alice, "inst").contains("type='result'"));

    // A message from someone not in the room.
    bob.send(&format!(
        "<message to='{ROOM}' type='groupchat' id='g1'><body>hi</body></message>"
    ));
    let got = answer(&mut bob, "g1");
    assert!(got.contains("<not-acceptable"), "{got}");

    // Nick conflict.
    let got = join(&mut bob, "Alice", "");
    assert!(got.contains("<conflict"), "{got}");
    let got = join(&mut bob, "Bob", "");
    assert!(got.contains("code='110'"), "{got}");
    bob.expect("</message>");

    // A participant may not configure the room, nor kick.
    bob.send(&format!(
        "<iq type='get' id='bc' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"
    ));
    assert!(answer(&mut bob, "bc").contains("<forbidden"));
    bob.send(&format!(
        "<iq type='set' id='bk' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item nick='Alice' role='none'/></query></iq>"
    ));
    assert!(answer(&mut bob, "bk").contains("<forbidden"));
    // The owner may not kick... the owner (an admin or owner is not kicked).
    alice.send(&format!(
        "<iq type='set' id='ak' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item nick='Alice' role='none'/></query></iq>"
    ));
    assert!(answer(&mut alice, "ak").contains("<not-allowed"));
    // Nor leave the room without an owner.
    alice.send(&format!(
        "<iq type='set' id='ao' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item jid='alice@localhost' affiliation='member'/></query></iq>"
    ));
    assert!(answer(&mut alice, "ao").contains("<conflict"));

    // Self-ping: an occupant's own JID answers, a non-occupant is told.
    bob.send(&format!(
        "<iq type='get' id='sp' to='{ROOM}/Bob'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    assert!(answer(&mut bob, "sp").contains("type='result'"));
    carol.send(&format!(
        "<iq type='get' id='cp' to='{ROOM}/Carol'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    assert!(answer(&mut carol, "cp").contains("<not-acceptable"));

    // Max users (2): carol does not fit.
    let got = join(&mut carol, "Carol", "");
    assert!(got.contains("<service-unavailable"), "{got}");

    // Members only: bob (no affiliation) is refused once he leaves.
    bob.send(&format!("<presence to='{ROOM}/Bob' type='unavailable'/>"));
    while !bob.expect("</presence>").contains("type='unavailable'") {}
    alice.send(&format!(
        "<iq type='set' id='mo' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='muc#roomconfig_membersonly'><value>1</value></field></x></query></iq>"
    ));
    assert!(answer(&mut alice, "mo").contains("type='result'"));
    let got = join(&mut bob, "Bob", "");
    assert!(got.contains("<registration-required"), "{got}");

    // Password: the room opens again with a secret.
    alice.send(&format!(
        "<iq type='set' id='pw' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='muc#roomconfig_membersonly'><value>0</value></field>\
         <field var='muc#roomconfig_passwordprotectedroom'><value>1</value></field>\
         <field var='muc#roomconfig_roomsecret'><value>sesame</value></field></x></query></iq>"
    ));
    assert!(answer(&mut alice, "pw").contains("type='result'"));
    let got = join(&mut bob, "Bob", "");
    assert!(got.contains("<not-authorized"), "{got}");
    let got = join(&mut bob, "Bob", "<password>wrong</password>");
    assert!(got.contains("<not-authorized"), "{got}");
    let got = join(&mut bob, "Bob", "<password>sesame</password>");
    assert!(got.contains("code='110'"), "{got}");
}

#[test]
fn visitors_private_messages_and_destruction() {
    let p = server("");
    let addr = p.addrs["c2s"][0];
    let mut alice = Raw::login(addr, "alice", "wonderland", "a");
    let mut bob = Raw::login(addr, "bob", "builder", "b");
    create(
        &mut alice,
        &[("moderatedroom", "1"), ("allowpm", "moderators")],
    );
    let got = join(&mut bob, "Bob", "<history maxstanzas='0'/>");
    assert!(got.contains("role='visitor'"), "{got}");
    bob.expect("</message>");
    alice.expect("</presence>");
    // A visitor has no voice, nor may send private messages here.
    bob.send(&format!(
        "<message to='{ROOM}' type='groupchat' id='v1'><body>hi</body></message>"
    ));
    assert!(answer(&mut bob, "v1").contains("<forbidden"));
    bob.send(&format!(
        "<message to='{ROOM}/Alice' type='chat' id='v2'><body>hi</body></message>"
    ));
    assert!(answer(&mut bob, "v2").contains("<forbidden"));
    // Voice granted: bob speaks, everyone (bob too) gets it with a stanza id.
    alice.send(&format!(
        "<iq type='set' id='vo' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item nick='Bob' role='participant'/></query></iq>"
    ));
    assert!(answer(&mut alice, "vo").contains("type='result'"));
    assert!(bob.expect("</presence>").contains("role='participant'"));
    bob.send(&format!(
        "<message to='{ROOM}' type='groupchat' id='v3'><body>thanks</body></message>"
    ));
    for c in [&mut alice, &mut bob] {
        let mut m = String::new();
        while !m.contains("thanks") {
            m = c.expect("</message>");
        }
        assert!(
            m.contains(&format!("from='{ROOM}/Bob'"))
                && m.contains("<stanza-id xmlns='urn:xmpp:sid:0' by='tea@conference.localhost'"),
            "{m}"
        );
    }
    // A groupchat message to an occupant's JID is refused.
    bob.send(&format!(
        "<message to='{ROOM}/Alice' type='groupchat' id='v4'><body>x</body></message>"
    ));
    assert!(answer(&mut bob, "v4").contains("<bad-request"));
    // Room disco.
    bob.send(&format!(
        "<iq type='get' id='di' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    let info = answer(&mut bob, "di") + &bob.expect("</iq>");
    for f in [
        "muc_moderated",
        "muc_temporary",
        "muc_open",
        "muc_semianonymous",
        "muc_unsecured",
        "muc_public",
        "urn:xmpp:mam:2",
        "muc#roominfo_occupants",
    ] {
        assert!(info.contains(f), "{f} in {info}");
    }
    // Destroyed with a reason: bob is told.
    alice.send(&format!(
        "<iq type='set' id='de' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <destroy><reason>closing</reason></destroy></query></iq>"
    ));
    assert!(answer(&mut alice, "de").contains("type='result'"));
    let gone = bob.expect("</presence>");
    assert!(
        gone.contains("type='unavailable'") && gone.contains("<destroy><reason>closing</reason>"),
        "{gone}"
    );
    bob.send(&format!(
        "<iq type='get' id='d2' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    assert!(answer(&mut bob, "d2").contains("<item-not-found"));
}
