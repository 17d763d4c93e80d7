//! XEP-0163 PEP with slixmpp (`xep_0060`, `xep_0115`, `xep_0163`) as the
//! independent client: an OMEMO-style device list seen by a contact through
//! `+notify` (live, and as the last item when it logs in), access models
//! (open, presence, whitelist) refusing the right readers, XEP-0223
//! publish-options as XEP-0402 bookmarks use them, items surviving a
//! restart; plus raw-socket refusals.

mod common;

use common::slixmpp::run;
use common::xmpp::Raw;
use common::Petrel;

fn server() -> Petrel {
    let p = Petrel::start("").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    p.ctl_ok(&["register", "carol", "localhost", "queen"]);
    p
}

/// Helpers every script here uses (after the shared prelude).
const PEP: &str = r#"
from slixmpp.xmlstream import ET
DL = 'eu.siacs.conversations.axolotl.devicelist'
AVATAR = 'urn:xmpp:avatar:metadata'
BOOKMARKS = 'urn:xmpp:bookmarks:1'

def pep_client(jid, pw):
    c = make(jid, pw)
    for x in ('xep_0004', 'xep_0060', 'xep_0115', 'xep_0163'):
        c.register_plugin(x)
    return c

async def pep_online(c, interest=()):
    # Interest is a +notify feature; once the caps hash covers it, the
    # next presence carries it.
    await online(c)
    for ns in interest:
        c.plugin['xep_0030'].add_feature(ns + '+notify')
    await c.plugin['xep_0115'].update_caps(broadcast=False)
    return c

def devicelist(*ids):
    return ET.fromstring("<list xmlns='eu.siacs.conversations.axolotl'>"
        + ''.join("<device id='%d'/>" % i for i in ids) + "</list>")

def device_ids(item):
    return ','.join(d.get('id') for d in item.xml.iter('{eu.siacs.conversations.axolotl}device'))

def options(c, **kw):
    f = c.plugin['xep_0004'].make_form(ftype='submit')
    f.add_field(var='FORM_TYPE', ftype='hidden',
                value='http://jabber.org/protocol/pubsub#publish-options')
    for k, v in kw.items():
        f.add_field(var='pubsub#' + k, value=v)
    return f

def error_of(e):
    # The pubsub#errors condition read from the XML (slixmpp's list lacks
    # XEP-0060's precondition-not-met).
    app = [c.tag.split('}')[1] for c in e.iq.xml.find('{jabber:client}error')
           if c.tag.startswith('{http://jabber.org/protocol/pubsub#errors}')]
    return '%s/%s' % (e.iq['error']['condition'], ','.join(app))
"#;

fn script(body: &str) -> String {
    format!("{PEP}\n{body}")
}

#[test]
fn device_list_reaches_a_contact_through_notify_and_access_models_hold() {
    let mut p = server();
    let first = script(
        r#"
async def main():
    alice = await pep_online(pep_client('alice@localhost', 'wonderland'))
    bob = await pep_online(pep_client('bob@localhost', 'builder'), [DL])
    await alice.get_roster(); await bob.get_roster()
    alice.send_presence(); bob.send_presence()
    # bob authorizes and subscribes back (slixmpp's defaults): both.
    both = asyncio.ensure_future(next_event(alice, 'roster_update',
        lambda iq: any(i['subscription'] == 'both' for i in iq['roster']['items'].values())))
    alice.send_presence_subscription(pto='bob@localhost')
    await both
    await settled(alice, bob)
    # Live: alice publishes her device list; bob's caps said +notify.
    got = asyncio.ensure_future(next_event(bob, 'pubsub_publish',
        lambda m: m['pubsub_event']['items']['node'] == DL))
    r = await alice.plugin['xep_0060'].publish('alice@localhost', DL, id='current',
        payload=devicelist(1001), options=options(alice, access_model='open'))
    print('published', r['pubsub']['publish']['item']['id'])
    m = await got
    print('bob notified', m['from'], device_ids(m['pubsub_event']['items']['item']))
    # bob leaves; the list changes; bob's next login gets the last item.
    bob.disconnect()
    await alice.plugin['xep_0060'].publish('alice@localhost', DL, id='current',
        payload=devicelist(1001, 2002), options=options(alice, access_model='open'))
    bob = pep_client('bob@localhost', 'builder')
    last = asyncio.ensure_future(next_event(bob, 'pubsub_publish',
        lambda m: m['pubsub_event']['items']['node'] == DL))
    await pep_online(bob, [DL])
    bob.send_presence()
    m = await last
    print('bob on login', device_ids(m['pubsub_event']['items']['item']),
          'delayed' if m.xml.find('{urn:xmpp:delay}delay') is not None else 'live')
    # Access models: an open node is readable by anyone, a presence one
    # only by contacts, a whitelist one only by its owner.
    carol = await pep_online(pep_client('carol@localhost', 'queen'))
    items = await carol.plugin['xep_0060'].get_items('alice@localhost', DL)
    print('carol reads open', device_ids(items['pubsub']['items']['item']))
    meta = ET.fromstring("<metadata xmlns='urn:xmpp:avatar:metadata'><info id='abc' bytes='10' type='image/png' width='1' height='1'/></metadata>")
    await alice.plugin['xep_0060'].publish('alice@localhost', AVATAR, id='abc', payload=meta)
    try:
        await carol.plugin['xep_0060'].get_items('alice@localhost', AVATAR)
        print('carol read the avatar')
    except slixmpp.exceptions.IqError as e:
        print('carol refused avatar', error_of(e))
    items = await bob.plugin['xep_0060'].get_items('alice@localhost', AVATAR)
    print('bob reads avatar', items['pubsub']['items']['item']['id'])
    # XEP-0402: bookmarks with its publish-options.
    bm = ET.fromstring("<conference xmlns='urn:xmpp:bookmarks:1' name='Tea' autojoin='true'><nick>alice</nick></conference>")
    await alice.plugin['xep_0060'].publish('alice@localhost', BOOKMARKS, id='tea@conference.localhost',
        payload=bm, options=options(alice, persist_items='true', max_items='max',
            send_last_published_item='never', access_model='whitelist'))
    try:
        await bob.plugin['xep_0060'].get_items('alice@localhost', BOOKMARKS)
        print('bob read the bookmarks')
    except slixmpp.exceptions.IqError as e:
        print('bob refused bookmarks', error_of(e))
    try:
        await alice.plugin['xep_0060'].publish('alice@localhost', BOOKMARKS, id='x',
            payload=bm, options=options(alice, access_model='open'))
        print('conflicting options accepted')
    except slixmpp.exceptions.IqError as e:
        print('conflicting options', error_of(e))
    # A retraction reaches bob too.
    gone = asyncio.ensure_future(next_event(bob, 'pubsub_retract',
        lambda m: m['pubsub_event']['items']['node'] == DL))
    await alice.plugin['xep_0060'].retract('alice@localhost', DL, 'current')
    m = await gone
    print('bob saw retract', m['pubsub_event']['items']['retract']['id'])
    for c in (alice, bob, carol): c.disconnect()
run(main)
"#,
    );
    let out = run(&p, &first, &[]);
    assert!(out.contains("published current"), "{out}");
    assert!(out.contains("bob notified alice@localhost 1001"), "{out}");
    assert!(out.contains("bob on login 1001,2002 delayed"), "{out}");
    assert!(out.contains("carol reads open 1001,2002"), "{out}");
    assert!(
        out.contains("carol refused avatar not-authorized/presence-subscription-required"),
        "{out}"
    );
    assert!(out.contains("bob reads avatar abc"), "{out}");
    assert!(
        out.contains("bob refused bookmarks not-allowed/closed-node"),
        "{out}"
    );
    assert!(
        out.contains("conflicting options conflict/precondition-not-met"),
        "{out}"
    );
    assert!(out.contains("bob saw retract current"), "{out}");

    // Persistent items survive a restart.
    p.stop();
    p.spawn();
    let after = script(
        r#"
async def main():
    alice = await pep_online(pep_client('alice@localhost', 'wonderland'))
    items = await alice.plugin['xep_0060'].get_items('alice@localhost', BOOKMARKS)
    for i in items['pubsub']['items']:
        print('bookmark after restart', i['id'], i.xml[0].get('name'))
    items = await alice.plugin['xep_0060'].get_items('alice@localhost', AVATAR)
    print('avatar after restart', items['pubsub']['items']['item']['id'])
    alice.disconnect()
run(main)
"#,
    );
    let out = run(&p, &after, &[]);
    assert!(
        out.contains("bookmark after restart tea@conference.localhost Tea"),
        "{out}"
    );
    assert!(out.contains("avatar after restart abc"), "{out}");
}

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

#[test]
fn raw_refusals_limits_and_owner_operations() {
    let p = Petrel::start("[pep]\nmax_nodes = 2\nmax_items = 3\n").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    let mut alice = Raw::login(p.addrs["c2s"][0], "alice", "wonderland", "a");
    let mut bob = Raw::login(p.addrs["c2s"][0], "bob", "builder", "b");
    let publish = |id: &str, node: &str, item: &str| {
        format!("<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{node}'>{item}</publish></pubsub></iq>")
    };
    // No item, no payload, two payloads.
    alice.send(&publish("e1", "n1", ""));
    let r = alice.expect("</iq>");
    assert!(
        r.contains("<bad-request") && r.contains("<item-required"),
        "{r}"
    );
    alice.send(&publish("e2", "n1", "<item id='x'/>"));
    assert!(alice.expect("</iq>").contains("<payload-required"));
    alice.send(&publish(
        "e3",
        "n1",
        "<item><a xmlns='urn:a'/><b xmlns='urn:b'/></item>",
    ));
    assert!(alice.expect("</iq>").contains("<invalid-payload"));
    // Someone else's node: publishing is the owner's.
    bob.send(&format!(
        "<iq type='set' id='f1' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><publish node='n1'><item><a xmlns='urn:a'/></item></publish></pubsub></iq>"
    ));
    assert!(bob.expect("</iq>").contains("<forbidden"));
    // max_items = "max" is the configured 3: the oldest goes.
    let opts = |access: &str| {
        format!("<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='pubsub#max_items'><value>max</value></field><field var='pubsub#access_model'><value>{access}</value></field></x></publish-options>")
    };
    for i in 0..4 {
        alice.send(&format!(
            "<iq type='set' id='p{i}'><pubsub xmlns='{PUBSUB}'><publish node='n1'><item id='i{i}'><a xmlns='urn:a'>{i}</a></item></publish>{}</pubsub></iq>",
            opts("open")
        ));
        let r = alice.expect("</iq>");
        assert!(r.contains(&format!("type='result' id='p{i}'")), "{r}");
    }
    // A pubsub#max_items above the limit is refused at creation.
    alice.send("<iq type='set' id='c1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><create node='n2'/><configure><x xmlns='jabber:x:data' type='submit'><field var='pubsub#max_items'><value>4</value></field></x></configure></pubsub></iq>");
    assert!(alice.expect("</iq>").contains("<not-acceptable"));
    bob.send(&format!(
        "<iq type='get' id='g1' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><items node='n1'/></pubsub></iq>"
    ));
    let r = bob.expect("</iq>");
    assert!(!r.contains("id='i0'"), "the oldest was dropped: {r}");
    for i in 1..4 {
        assert!(r.contains(&format!("id='i{i}'")), "{r}");
    }
    bob.send(&format!(
        "<iq type='get' id='g2' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><items node='n1' max_items='1'/></pubsub></iq>"
    ));
    let r = bob.expect("</iq>");
    assert!(r.contains("id='i3'") && !r.contains("id='i2'"), "{r}");
    bob.send(&format!(
        "<iq type='get' id='g3' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><items node='nope'/></pubsub></iq>"
    ));
    assert!(bob.expect("</iq>").contains("<item-not-found"));
    // Explicit subscriptions are not offered.
    bob.send(&format!(
        "<iq type='set' id='s1' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><subscribe node='n1' jid='bob@localhost'/></pubsub></iq>"
    ));
    let r = bob.expect("</iq>");
    assert!(
        r.contains("<feature-not-implemented") && r.contains("feature='subscribe'"),
        "{r}"
    );
    // max_nodes = 2: n1 and n2, then no third.
    alice.send(&publish("n2", "n2", "<item><a xmlns='urn:a'/></item>"));
    assert!(alice.expect("</iq>").contains("type='result' id='n2'"));
    alice.send(&publish("n3", "n3", "<item><a xmlns='urn:a'/></item>"));
    let r = alice.expect("</iq>");
    assert!(
        r.contains("<not-allowed") && r.contains("<max-nodes-exceeded"),
        "{r}"
    );
    // The owner's configure, purge and delete.
    alice.send("<iq type='get' id='cf'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='n1'/></pubsub></iq>");
    let r = alice.expect("</iq>");
    assert!(
        r.contains("var='pubsub#access_model'") && r.contains("<value>open</value>"),
        "{r}"
    );
    alice.send("<iq type='set' id='pu'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><purge node='n1'/></pubsub></iq>");
    assert!(alice.expect("/>").contains("type='result' id='pu'"));
    alice.send(&format!(
        "<iq type='get' id='g4'><pubsub xmlns='{PUBSUB}'><items node='n1'/></pubsub></iq>"
    ));
    let r = alice.expect("</iq>");
    assert!(r.contains("type='result'") && !r.contains("<item "), "{r}");
    alice.send("<iq type='set' id='de'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='n2'/></pubsub></iq>");
    assert!(alice.expect("/>").contains("type='result' id='de'"));
    alice.send(&publish("n3b", "n3", "<item><a xmlns='urn:a'/></item>"));
    assert!(
        alice.expect("</iq>").contains("type='result' id='n3b'"),
        "room for a node again"
    );
    // The account advertises PEP and lists its nodes.
    alice
        .send("<iq type='get' id='di'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let r = alice.expect("</iq>");
    assert!(r.contains("category='pubsub' type='pep'"), "{r}");
    assert!(
        r.contains("http://jabber.org/protocol/pubsub#publish-options"),
        "{r}"
    );
    alice.send(
        "<iq type='get' id='dit'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    let r = alice.expect("</iq>");
    assert!(
        r.contains("node='n1'") && r.contains("node='n3'") && !r.contains("node='n2'"),
        "{r}"
    );
}
