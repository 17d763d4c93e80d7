//! slixmpp (Python) as an independent XMPP client: X-OAUTH2 with a token from
//! /oauth/token, SCRAM-SHA-256 and SCRAM-SHA-1, PLAIN after STARTTLS and on
//! direct TLS, two clients exchanging messages, roster pushes and presence
//! through subscriptions, an offline message delivered on login, private
//! storage (XEP-0049, bookmarks of XEP-0048) and vCards (XEP-0054).

mod common;

use common::slixmpp::run;
use common::{password_grant, Petrel};

fn server() -> Petrel {
    let p = Petrel::start("").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    p
}

#[test]
fn x_oauth2_token_and_scram_clients_exchange_messages() {
    let p = server();
    let (status, body) = password_grant(&p.http(), "alice@localhost", "wonderland", &[]);
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let out = run(
        &p,
        r#"
async def main():
    alice = await online(make('alice@localhost', mech='X-OAUTH2', token=ARGS[0]))
    bob = await online(make('bob@localhost', 'builder', mech='SCRAM-SHA-256'))
    print('alice', mech(alice), 'encrypted' if encrypted(alice) else 'plain', alice.boundjid.full)
    print('bob', mech(bob), 'encrypted' if encrypted(bob) else 'plain')
    alice.send_presence(); bob.send_presence()
    await asyncio.sleep(0.3)
    got = asyncio.ensure_future(next_event(bob, 'message'))
    alice.send_message(mto='bob@localhost', mbody='hello bob', mtype='chat')
    m = await got
    print('bob got', m['body'], 'from', m['from'].bare)
    got = asyncio.ensure_future(next_event(alice, 'message'))
    m.reply('hello alice').send()
    m = await got
    print('alice got', m['body'], 'from', m['from'])
    version = await bob.plugin['xep_0092'].get_version('localhost')
    print('server is', version['software_version']['name'])
    await bob.plugin['xep_0199'].ping('localhost', timeout=10)
    print('ping ok')
    alice.disconnect(); bob.disconnect()
run(main)
"#,
        &[token],
    );
    assert!(
        out.contains("alice X-OAUTH2 encrypted alice@localhost/"),
        "{out}"
    );
    assert!(out.contains("bob SCRAM-SHA-256 encrypted"), "{out}");
    assert!(
        out.contains("bob got hello bob from alice@localhost"),
        "{out}"
    );
    assert!(
        out.contains("alice got hello alice from bob@localhost/"),
        "{out}"
    );
    assert!(out.contains("server is Petrel"), "{out}");
    assert!(out.contains("ping ok"), "{out}");
}

#[test]
fn plain_after_starttls_and_scram_sha1_on_direct_tls() {
    let p = server();
    let out = run(
        &p,
        r#"
async def main():
    alice = await online(make('alice@localhost', 'wonderland', mech='PLAIN'))
    print('alice', mech(alice), 'starttls' in alice.features)
    bob = await online(make('bob@localhost', 'builder', mech='SCRAM-SHA-1', direct_tls=True))
    print('bob', mech(bob), encrypted(bob))
    alice.disconnect(); bob.disconnect()
    # A wrong password fails.
    bad = make('alice@localhost', 'nope', mech='PLAIN')
    try:
        await online(bad, timeout=10)
        print('wrong password accepted')
    except Exception as e:
        print('wrong password refused:', e)
    bad.disconnect()
run(main)
"#,
        &[],
    );
    assert!(out.contains("alice PLAIN True"), "{out}");
    assert!(out.contains("bob SCRAM-SHA-1 True"), "{out}");
    assert!(out.contains("wrong password refused"), "{out}");
}

#[test]
fn roster_pushes_and_presence_through_subscriptions() {
    let p = server();
    let out = run(
        &p,
        r#"
async def main():
    alice = await online(make('alice@localhost', 'wonderland'))
    bob = await online(make('bob@localhost', 'builder'))
    await alice.get_roster(); await bob.get_roster()
    alice.send_presence(); bob.send_presence()
    await asyncio.sleep(0.3)
    # bob's client authorizes automatically (slixmpp's default) and
    # subscribes back; alice then sees bob online.
    seen = asyncio.ensure_future(next_event(alice, 'presence_available',
        lambda pr: pr['from'].bare == 'bob@localhost'))
    both = asyncio.ensure_future(next_event(alice, 'roster_update',
        lambda iq: any(i['subscription'] == 'both' for i in iq['roster']['items'].values())))
    alice.send_presence_subscription(pto='bob@localhost')
    pr = await seen
    print('alice sees', pr['from'])
    await both
    print('alice roster', alice.client_roster['bob@localhost']['subscription'])
    # An explicit roster set is pushed back with the name.
    named = asyncio.ensure_future(next_event(alice, 'roster_update',
        lambda iq: any(i['name'] == 'Bobby' for i in iq['roster']['items'].values())))
    await alice.update_roster('bob@localhost', name='Bobby', groups=['Friends'])
    await named
    r = await alice.get_roster()
    item = r['roster']['items'][slixmpp.JID('bob@localhost')]
    print('stored', item['name'], sorted(item['groups']), item['subscription'])
    # bob going offline reaches alice.
    gone = asyncio.ensure_future(next_event(alice, 'presence_unavailable',
        lambda pr: pr['from'].bare == 'bob@localhost'))
    bob.disconnect()
    await gone
    print('bob went offline')
    alice.disconnect()
run(main)
"#,
        &[],
    );
    assert!(out.contains("alice sees bob@localhost/"), "{out}");
    assert!(out.contains("alice roster both"), "{out}");
    assert!(out.contains("stored Bobby ['Friends'] both"), "{out}");
    assert!(out.contains("bob went offline"), "{out}");
}

#[test]
fn offline_message_delivered_on_login() {
    let p = server();
    let out = run(
        &p,
        r#"
async def main():
    alice = await online(make('alice@localhost', 'wonderland'))
    alice.send_message(mto='bob@localhost', mbody='sent while you slept', mtype='chat')
    await alice.plugin['xep_0199'].ping('localhost', timeout=10)
    alice.disconnect()
    bob = make('bob@localhost', 'builder')
    bob.register_plugin('xep_0203')
    got = asyncio.ensure_future(next_event(bob, 'message'))
    bob.add_event_handler('session_start', lambda _: bob.send_presence())
    await online(bob)
    m = await got
    print('bob got', m['body'], 'from', m['from'].bare, 'delayed', bool(m['delay']['stamp']))
    bob.disconnect()
run(main)
"#,
        &[],
    );
    assert!(
        out.contains("bob got sent while you slept from alice@localhost delayed True"),
        "{out}"
    );
}

/// XEP-0049 private storage through slixmpp's XEP-0048 bookmarks (stored
/// with `method='xep_0049'`), and XEP-0054 vCards: alice publishes hers,
/// bob reads it and may not overwrite it; both survive a restart.
#[test]
fn private_storage_bookmarks_and_vcards() {
    let mut p = server();
    let store = r#"
from slixmpp.plugins.xep_0048.stanza import Bookmarks
async def main():
    alice = make('alice@localhost', 'wonderland')
    for x in ('xep_0048', 'xep_0049', 'xep_0054'):
        alice.register_plugin(x)
    await online(alice)
    b = Bookmarks()
    b.add_conference('tea@conference.localhost', 'alice', name='Tea party', autojoin=True)
    await alice.plugin['xep_0048'].set_bookmarks(b, method='xep_0049')
    v = alice.plugin['xep_0054'].make_vcard()
    v['FN'] = 'Alice Liddell'
    v['NICKNAME'] = 'alice'
    await alice.plugin['xep_0054'].publish_vcard(v)
    bob = make('bob@localhost', 'builder')
    bob.register_plugin('xep_0054')
    await online(bob)
    iq = await bob.plugin['xep_0054'].get_vcard('alice@localhost', local=False)
    print('bob read', iq['vcard_temp']['FN'])
    mine = bob.plugin['xep_0054'].make_vcard()
    mine['FN'] = 'Not Alice'
    try:
        await bob.plugin['xep_0054'].publish_vcard(mine, jid='alice@localhost')
        print('overwrite allowed')
    except slixmpp.exceptions.IqError as e:
        print('overwrite refused', e.iq['error']['condition'])
    alice.disconnect(); bob.disconnect()
run(main)
"#;
    let out = run(&p, store, &[]);
    assert!(out.contains("bob read Alice Liddell"), "{out}");
    assert!(out.contains("overwrite refused forbidden"), "{out}");
    p.stop();
    p.spawn();
    let read = r#"
async def main():
    alice = make('alice@localhost', 'wonderland')
    for x in ('xep_0048', 'xep_0049', 'xep_0054'):
        alice.register_plugin(x)
    await online(alice)
    r = await alice.plugin['xep_0048'].get_bookmarks(method='xep_0049')
    for c in r['private']['bookmarks']['conferences']:
        print('bookmark', c['jid'], c['name'], c['autojoin'], c['nick'])
    iq = await alice.plugin['xep_0054'].get_vcard('alice@localhost', local=False)
    print('vcard', iq['vcard_temp']['FN'], iq['vcard_temp']['NICKNAME'])
    alice.disconnect()
run(main)
"#;
    let out = run(&p, read, &[]);
    assert!(
        out.contains("bookmark tea@conference.localhost Tea party True alice"),
        "{out}"
    );
    assert!(out.contains("vcard Alice Liddell ['alice']"), "{out}");
}
