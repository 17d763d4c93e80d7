//! XMPP for phones and several devices, with slixmpp's own XEP plugins as
//! the independent client: message carbons (XEP-0280, with the private and
//! no-copy hints), client state indication (XEP-0352), the blocking
//! command (XEP-0191), stream management with resumption (XEP-0198) and the
//! message archive (XEP-0313 with XEP-0359 stanza ids and XEP-0059 paging).

mod common;

use common::slixmpp::run;
use common::Petrel;

fn server() -> Petrel {
    let p = Petrel::start("").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    p
}

#[test]
fn carbons_copy_both_sides_to_the_other_resources() {
    let p = server();
    let out = run(
        &p,
        r#"
from slixmpp import Message
async def main():
    phone = make('alice@localhost/phone', 'wonderland', mech='SCRAM-SHA-256')
    laptop = make('alice@localhost/laptop', 'wonderland', mech='SCRAM-SHA-256')
    old = make('alice@localhost/old', 'wonderland', mech='SCRAM-SHA-256')
    for c in (phone, laptop):
        c.register_plugin('xep_0280')
    bob = make('bob@localhost/desk', 'builder', mech='SCRAM-SHA-256')
    for c in (phone, laptop, old, bob):
        await online(c)
    info = await bob.plugin['xep_0030'].get_info(jid='localhost')
    print('server carbons', 'urn:xmpp:carbons:2' in info['disco_info']['features'])
    await phone.plugin['xep_0280'].enable()
    await laptop.plugin['xep_0280'].enable()
    # The phone is the one that gets messages to the bare JID.
    phone.send_presence(ppriority=5); laptop.send_presence(ppriority=1)
    old.send_presence(ppriority=0); bob.send_presence()
    await settled(phone, laptop, old, bob)
    seen_old = []
    old.add_event_handler('message', lambda m: seen_old.append(m['body']))
    old.add_event_handler('carbon_received', lambda m: seen_old.append('carbon'))

    # bob -> alice: the phone gets it, the laptop a received carbon.
    direct = asyncio.ensure_future(next_event(phone, 'message'))
    carbon = asyncio.ensure_future(next_event(laptop, 'carbon_received'))
    bob.send_message(mto='alice@localhost', mbody='to alice', mtype='chat')
    m = await direct
    print('phone got', m['body'])
    c = await carbon
    print('laptop received carbon from', c['from'], 'of', c['carbon_received']['body'],
          'from', c['carbon_received']['from'], 'to', c['carbon_received']['to'])

    # phone -> bob: bob gets it, the laptop a sent carbon; a private message
    # first is not copied.
    carbon = asyncio.ensure_future(next_event(laptop, 'carbon_sent'))
    got = asyncio.ensure_future(next_event(bob, 'message', lambda m: m['body'] == 'public'))
    private = phone.make_message(mto='bob@localhost', mbody='private', mtype='chat')
    private.append(phone.plugin['xep_0280'].stanza.PrivateCarbon())
    nocopy = ET.Element('{urn:xmpp:hints}no-copy')
    private.xml.append(nocopy)
    private.send()
    hint_only = phone.make_message(mto='bob@localhost', mbody='hint only', mtype='chat')
    hint_only.xml.append(ET.Element('{urn:xmpp:hints}no-copy'))
    hint_only.send()
    phone.send_message(mto='bob@localhost', mbody='public', mtype='chat')
    c = await carbon
    print('laptop sent carbon from', c['from'], 'of', c['carbon_sent']['body'],
          'to', c['carbon_sent']['to'])
    await got

    # To a full JID: the other carbon-enabled resource gets a copy.
    carbon = asyncio.ensure_future(next_event(phone, 'carbon_received'))
    bob.send_message(mto='alice@localhost/laptop', mbody='to the laptop', mtype='chat')
    c = await carbon
    print('phone received carbon of', c['carbon_received']['body'])
    # Headlines are not copied; carbons off again stops them.
    await laptop.plugin['xep_0280'].disable()
    later = asyncio.ensure_future(next_event(laptop, 'carbon_received', timeout=1.5))
    bob.send_message(mto='alice@localhost', mbody='after disable', mtype='chat')
    try:
        await later
        print('laptop still gets carbons')
    except asyncio.TimeoutError:
        print('laptop gets no carbons after disable')
    print('old saw', seen_old)
    for c in (phone, laptop, old, bob):
        c.disconnect()
import xml.etree.ElementTree as ET
run(main)
"#,
        &[],
    );
    assert!(out.contains("server carbons True"), "{out}");
    assert!(out.contains("phone got to alice"), "{out}");
    assert!(
        out.contains(
            "laptop received carbon from alice@localhost of to alice from bob@localhost/desk to alice@localhost"
        ),
        "{out}"
    );
    assert!(
        out.contains("laptop sent carbon from alice@localhost of public to bob@localhost"),
        "the private and no-copy messages are not copied: {out}"
    );
    assert!(
        out.contains("phone received carbon of to the laptop"),
        "{out}"
    );
    assert!(
        out.contains("laptop gets no carbons after disable"),
        "{out}"
    );
    // A resource that never enabled carbons sees none, and (priority 0)
    // none of the messages to the bare JID either.
    assert!(out.contains("old saw []"), "{out}");
}

#[test]
fn an_inactive_client_gets_presence_late_and_messages_at_once() {
    let p = server();
    let out = run(
        &p,
        r#"
async def main():
    alice = make('alice@localhost/phone', 'wonderland', mech='SCRAM-SHA-256')
    alice.register_plugin('xep_0352')
    bob = make('bob@localhost/desk', 'builder', mech='SCRAM-SHA-256')
    await online(alice); await online(bob)
    print('csi offered', alice.plugin['xep_0352'].enabled)
    echo = asyncio.ensure_future(next_event(alice, 'presence'))
    alice.send_presence()
    await echo
    seen = []
    alice.add_event_handler('presence', lambda p: seen.append(('presence', p['from'].full, p['status'])))
    alice.add_event_handler('message', lambda m: seen.append(('message', m['body'])))
    alice.plugin['xep_0352'].send_inactive()
    await settled(alice)
    for i in range(1, 4):
        bob.send_presence(pto='alice@localhost/phone', pstatus='status %d' % i)
    # bob's presences were routed before his ping's answer; alice's ping
    # answer follows anything that was not held for her.
    await settled(bob, alice)
    print('while inactive', seen)
    got = asyncio.ensure_future(next_event(alice, 'message'))
    bob.send_message(mto='alice@localhost/phone', mbody='wake up', mtype='chat')
    await got
    print('after a message', seen)
    seen.clear()
    bob.send_presence(pto='alice@localhost/phone', pstatus='status 4')
    await settled(bob, alice)
    print('held again', seen)
    alice.plugin['xep_0352'].send_active()
    await next_event(alice, 'presence')
    print('after active', seen)
    alice.disconnect(); bob.disconnect()
run(main)
"#,
        &[],
    );
    assert!(out.contains("csi offered True"), "{out}");
    assert!(out.contains("while inactive []"), "held back: {out}");
    assert!(
        out.contains(
            "after a message [('presence', 'bob@localhost/desk', 'status 3'), ('message', 'wake up')]"
        ),
        "only the latest presence, before the message: {out}"
    );
    assert!(out.contains("held again []"), "{out}");
    assert!(
        out.contains("after active [('presence', 'bob@localhost/desk', 'status 4')]"),
        "{out}"
    );
}

#[test]
fn blocking_stops_stanzas_both_ways_and_is_pushed_and_kept() {
    let p = server();
    let out = run(
        &p,
        r#"
def error_of(m):
    e = m['error']
    blocked = m.xml.find('{jabber:client}error/{urn:xmpp:blocking:errors}blocked') is not None
    return '%s%s' % (e['condition'], ' blocked' if blocked else '')

async def main():
    phone = make('alice@localhost/phone', 'wonderland', mech='SCRAM-SHA-256')
    laptop = make('alice@localhost/laptop', 'wonderland', mech='SCRAM-SHA-256')
    for c in (phone, laptop):
        c.register_plugin('xep_0191')
    bob = make('bob@localhost/desk', 'builder', mech='SCRAM-SHA-256')
    for c in (phone, laptop, bob):
        await online(c)
    info = await bob.plugin['xep_0030'].get_info(jid='localhost')
    print('server blocking', 'urn:xmpp:blocking' in info['disco_info']['features'])
    phone.send_presence(ppriority=1); laptop.send_presence(); bob.send_presence()
    print('empty list', await laptop.plugin['xep_0191'].get_blocked_jids())
    pushed = asyncio.ensure_future(next_event(laptop, 'blocked'))
    await phone.plugin['xep_0191'].block(['bob@localhost', 'spam.example'])
    push = await pushed
    print('laptop pushed', sorted(str(i['jid']) for i in push['block']))

    err = asyncio.ensure_future(next_event(bob, 'message_error'))
    bob.send_message(mto='alice@localhost', mbody='let me in', mtype='chat')
    print('bob gets', error_of(await err))
    err = asyncio.ensure_future(next_event(phone, 'message_error'))
    phone.send_message(mto='bob@localhost/desk', mbody='hi bob', mtype='chat')
    print('alice gets', error_of(await err))
    try:
        await bob['xep_0030'].get_info(jid='alice@localhost/phone', timeout=5)
        print('bob iq answered')
    except slixmpp.exceptions.IqError as e:
        print('bob iq', e.iq['error']['condition'])

    # The list is kept: a new session reads it from the store.
    gone = [asyncio.ensure_future(next_event(c, 'disconnected')) for c in (laptop, phone)]
    laptop.disconnect(); phone.disconnect()
    await asyncio.gather(*gone)
    again = make('alice@localhost/tablet', 'wonderland', mech='SCRAM-SHA-256')
    again.register_plugin('xep_0191')
    await online(again)
    again.send_presence()
    print('kept', sorted(j.full for j in await again.plugin['xep_0191'].get_blocked_jids()))
    err = asyncio.ensure_future(next_event(bob, 'message_error'))
    bob.send_message(mto='alice@localhost', mbody='still?', mtype='chat')
    print('bob still gets', error_of(await err))

    pushed = asyncio.ensure_future(next_event(again, 'unblocked'))
    iq = again.make_iq_set(); iq.enable('unblock')
    await iq.send()
    push = await pushed
    print('unblock all pushed', len(push['unblock']))
    got = asyncio.ensure_future(next_event(again, 'message'))
    bob.send_message(mto='alice@localhost', mbody='hello again', mtype='chat')
    print('alice got', (await got)['body'])
    try:
        iq = again.make_iq_set(); iq.enable('block')
        await iq.send()
    except slixmpp.exceptions.IqError as e:
        print('empty block', e.iq['error']['condition'])
    again.disconnect(); bob.disconnect()
run(main)
"#,
        &[],
    );
    assert!(out.contains("server blocking True"), "{out}");
    assert!(out.contains("empty list set()"), "{out}");
    assert!(
        out.contains("laptop pushed ['bob@localhost', 'spam.example']"),
        "{out}"
    );
    assert!(out.contains("bob gets service-unavailable"), "{out}");
    assert!(out.contains("alice gets not-acceptable blocked"), "{out}");
    assert!(out.contains("bob iq service-unavailable"), "{out}");
    assert!(
        out.contains("kept ['bob@localhost', 'spam.example']"),
        "{out}"
    );
    assert!(out.contains("bob still gets service-unavailable"), "{out}");
    assert!(out.contains("unblock all pushed 0"), "{out}");
    assert!(out.contains("alice got hello again"), "{out}");
    assert!(out.contains("empty block bad-request"), "{out}");
}

#[test]
fn stream_management_resumes_after_a_dropped_connection() {
    let p = server();
    let out = run(
        &p,
        r#"
async def main():
    alice = make('alice@localhost/phone', 'wonderland', mech='SCRAM-SHA-256')
    alice.register_plugin('xep_0198')
    enabled = asyncio.ensure_future(next_event(alice, 'sm_enabled'))
    await online(alice)
    await enabled
    sm = alice.plugin['xep_0198']
    print('resumable', bool(sm.sm_id))
    bob = make('bob@localhost/desk', 'builder', mech='SCRAM-SHA-256')
    await online(bob)
    got = []
    all_three = asyncio.Event()
    def on_message(m):
        got.append(m['body'])
        if len(got) >= 3:
            all_three.set()
    alice.add_event_handler('message', on_message)
    starts = []
    alice.add_event_handler('session_start', lambda _: starts.append(1))
    # The radio drops: no </stream>, the socket just goes.
    lost = asyncio.ensure_future(next_event(alice, 'disconnected'))
    alice.transport.abort()
    await lost
    for i in range(3):
        bob.send_message(mto='alice@localhost/phone', mbody='gap %d' % i, mtype='chat')
    await bob.plugin['xep_0199'].ping('localhost', timeout=10)
    resumed = asyncio.ensure_future(next_event(alice, 'session_resumed'))
    alice.connect(HOST, alice._port)
    await resumed
    try:
        await asyncio.wait_for(all_three.wait(), 10)
    except asyncio.TimeoutError:
        pass
    print('after resume', got, 'new sessions', len(starts))
    alice.send_message(mto='bob@localhost/desk', mbody='back', mtype='chat')
    m = await next_event(bob, 'message')
    print('bob got', m['body'])
    alice.disconnect(); bob.disconnect()
run(main)
"#,
        &[],
    );
    assert!(out.contains("resumable True"), "{out}");
    assert!(
        out.contains("after resume ['gap 0', 'gap 1', 'gap 2'] new sessions 0"),
        "{out}"
    );
    assert!(out.contains("bob got back"), "{out}");
}

#[test]
fn the_archive_keeps_both_sides_pages_and_follows_preferences() {
    let p = server();
    let out = run(
        &p,
        r#"
async def main():
    alice = make('alice@localhost/phone', 'wonderland', mech='SCRAM-SHA-256')
    bob = make('bob@localhost/desk', 'builder', mech='SCRAM-SHA-256')
    for c in (alice, bob):
        c.register_plugin('xep_0313'); c.register_plugin('xep_0059')
        await online(c)
        c.send_presence()
    info = await alice.plugin['xep_0030'].get_info(jid='alice@localhost')
    print('account mam', 'urn:xmpp:mam:2' in info['disco_info']['features'])
    ids = []
    def got(m):
        sid = m.xml.find('{urn:xmpp:sid:0}stanza-id')
        if sid is not None:
            ids.append((sid.get('by'), sid.get('id')))
    bob.add_event_handler('message', got)
    news = asyncio.ensure_future(next_event(bob, 'message', lambda m: m['body'] == 'news'))
    for i in range(5):
        m = alice.make_message(mto='bob@localhost', mbody='a%d' % i, mtype='chat')
        # A stanza id from a client is not trusted: the server's replaces it.
        fake = ET.SubElement(m.xml, '{urn:xmpp:sid:0}stanza-id')
        fake.set('by', 'bob@localhost'); fake.set('id', 'forged')
        m.send()
    alice.send_message(mto='bob@localhost', mbody='news', mtype='headline')
    # bob answers once he has them all.
    await news
    for i in range(2):
        done = asyncio.ensure_future(next_event(alice, 'message'))
        bob.send_message(mto='alice@localhost', mbody='b%d' % i, mtype='chat')
        await done
    print('stanza ids', len(ids), all(by == 'bob@localhost' and len(i) == 16 for by, i in ids))

    r = await alice.plugin['xep_0313'].retrieve()
    res = r['mam']['results']
    print('all', [m['mam_result']['forwarded']['stanza']['body'] for m in res],
          'complete', r['mam_fin']['complete'])
    r = await alice.plugin['xep_0313'].retrieve(with_jid=JID('carol@localhost'))
    print('with carol', len(r['mam']['results']), r['mam_fin']['complete'])
    pages = []
    async for m in alice.plugin['xep_0313'].iterate(rsm={'max': 3}):
        pages.append(m['mam_result']['forwarded']['stanza']['body'])
    print('paged', pages)
    newest = []
    async for m in alice.plugin['xep_0313'].iterate(reverse=True, rsm={'max': 3}, total=4):
        newest.append(m['mam_result']['forwarded']['stanza']['body'])
    print('newest first', newest)
    r = await bob.plugin['xep_0313'].retrieve(with_jid=JID('alice@localhost'))
    print('bob has', [m['mam_result']['forwarded']['stanza']['body'] for m in r['mam']['results']])

    # Preferences: alice archives nothing more with bob.
    iq = alice.make_iq_set()
    prefs = ET.SubElement(iq.xml, '{urn:xmpp:mam:2}prefs')
    prefs.set('default', 'always')
    never = ET.SubElement(prefs, '{urn:xmpp:mam:2}never')
    ET.SubElement(never, '{urn:xmpp:mam:2}jid').text = 'bob@localhost'
    r = await iq.send()
    print('prefs set', r.xml.find('{urn:xmpp:mam:2}prefs/{urn:xmpp:mam:2}never/{urn:xmpp:mam:2}jid').text)
    done = asyncio.ensure_future(next_event(bob, 'message'))
    alice.send_message(mto='bob@localhost', mbody='off the record', mtype='chat')
    await done
    r = await alice.plugin['xep_0313'].retrieve()
    print('alice after prefs', len(r['mam']['results']))
    r = await bob.plugin['xep_0313'].retrieve()
    print('bob after prefs', len(r['mam']['results']))
    try:
        iq = alice.make_iq_set()
        q = ET.SubElement(iq.xml, '{urn:xmpp:mam:2}query')
        s = ET.SubElement(q, '{http://jabber.org/protocol/rsm}set')
        ET.SubElement(s, '{http://jabber.org/protocol/rsm}after').text = '00000000000000ff'
        await iq.send()
        print('unknown id answered')
    except slixmpp.exceptions.IqError as e:
        print('unknown id', e.iq['error']['condition'])
    alice.disconnect(); bob.disconnect()
import xml.etree.ElementTree as ET
from slixmpp import JID
run(main)
"#,
        &[],
    );
    assert!(out.contains("account mam True"), "{out}");
    assert!(out.contains("stanza ids 5 True"), "{out}");
    assert!(
        out.contains("all ['a0', 'a1', 'a2', 'a3', 'a4', 'b0', 'b1'] complete true"),
        "the headline is not archived: {out}"
    );
    assert!(out.contains("with carol 0 true"), "{out}");
    assert!(
        out.contains("paged ['a0', 'a1', 'a2', 'a3', 'a4', 'b0', 'b1']"),
        "{out}"
    );
    assert!(
        out.contains("newest first ['b1', 'b0', 'a4', 'a3']"),
        "{out}"
    );
    assert!(
        out.contains("bob has ['a0', 'a1', 'a2', 'a3', 'a4', 'b0', 'b1']"),
        "{out}"
    );
    assert!(out.contains("prefs set bob@localhost"), "{out}");
    assert!(out.contains("alice after prefs 7"), "{out}");
    assert!(out.contains("bob after prefs 8"), "{out}");
    assert!(out.contains("unknown id item-not-found"), "{out}");

    // The archive goes with the account.
    p.ctl_ok(&["unregister", "alice", "localhost"]);
    p.ctl_ok(&["register", "alice", "localhost", "wonderland"]);
    let out = run(
        &p,
        r#"
async def main():
    alice = make('alice@localhost/phone', 'wonderland', mech='SCRAM-SHA-256')
    alice.register_plugin('xep_0313')
    await online(alice)
    r = await alice.plugin['xep_0313'].retrieve()
    print('after re-registering', len(r['mam']['results']))
    alice.disconnect()
run(main)
"#,
        &[],
    );
    assert!(out.contains("after re-registering 0"), "{out}");
}
