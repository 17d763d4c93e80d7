//! The XEP-0060 service on `pubsub.localhost` with slixmpp (`xep_0060`) as
//! the independent client: create and configure, subscribe and get
//! notifications, affiliations (publisher, outcast), access models, paged
//! items (XEP-0059), retract, purge and delete, and everything surviving a
//! restart; plus raw-socket refusals.

mod common;

use common::slixmpp::{run, PUBSUB};
use common::xmpp::Raw;
use common::Petrel;

fn server() -> Petrel {
    let p = Petrel::start("").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    p.ctl_ok(&["register", "carol", "localhost", "queen"]);
    p
}

const HELPERS: &str = r#"
RSM = 'http://jabber.org/protocol/rsm'

def reading(v):
    return ET.fromstring("<reading xmlns='urn:example:sensor'>%s</reading>" % v)

def texts(items):
    return ','.join(i.xml[0].text for i in items)
"#;

#[test]
fn nodes_subscriptions_affiliations_paging_and_a_restart() {
    let mut p = server();
    let first = format!(
        "{PUBSUB}{HELPERS}{}",
        r#"
async def main():
    alice = await online(ps_client('alice@localhost', 'wonderland'))
    bob = await online(ps_client('bob@localhost', 'builder'))
    carol = await online(ps_client('carol@localhost', 'queen'))
    for c in (alice, bob, carol): c.send_presence()
    info = await alice.plugin['xep_0030'].get_info(PS)
    print('service', info['disco_info']['identities'])
    form = alice.plugin['xep_0004'].make_form(ftype='submit')
    form.add_field(var='FORM_TYPE', ftype='hidden', value='http://jabber.org/protocol/pubsub#node_config')
    form.add_field(var='pubsub#max_items', value='20')
    form.add_field(var='pubsub#title', value='Living room')
    await alice.plugin['xep_0060'].create_node(PS, 'home/living/temp', config=form)
    try:
        await bob.plugin['xep_0060'].create_node(PS, 'home/living/temp')
    except slixmpp.exceptions.IqError as e:
        print('taken', error_of(e))
    r = await bob.plugin['xep_0060'].subscribe(PS, 'home/living/temp')
    print('bob', r['pubsub']['subscription']['subscription'])
    got = asyncio.ensure_future(next_event(bob, 'pubsub_publish'))
    await alice.plugin['xep_0060'].publish(PS, 'home/living/temp', id='r0', payload=reading('20.5'))
    m = await got
    print('bob got', m['pubsub_event']['items']['item']['id'],
          m['pubsub_event']['items']['item'].xml[0].text, 'from', m['from'])
    # bob may not publish until alice makes him a publisher.
    try:
        await bob.plugin['xep_0060'].publish(PS, 'home/living/temp', payload=reading('99'))
    except slixmpp.exceptions.IqError as e:
        print('bob may not publish', error_of(e))
    await alice.plugin['xep_0060'].modify_affiliations(PS, 'home/living/temp',
        affiliations=[('bob@localhost', 'publisher'), ('carol@localhost', 'outcast')])
    for i in range(1, 12):
        await bob.plugin['xep_0060'].publish(PS, 'home/living/temp', id='r%d' % i, payload=reading(str(20 + i)))
    try:
        await carol.plugin['xep_0060'].subscribe(PS, 'home/living/temp')
    except slixmpp.exceptions.IqError as e:
        print('carol outcast', error_of(e))
    # Paging (XEP-0059): 5 at a time.
    pages = []
    after = None
    while True:
        iq = bob.Iq(sto=PS, stype='get')
        iq['pubsub']['items']['node'] = 'home/living/temp'
        rsm = ET.SubElement(iq['pubsub'].xml, '{%s}set' % RSM)
        ET.SubElement(rsm, '{%s}max' % RSM).text = '5'
        if after: ET.SubElement(rsm, '{%s}after' % RSM).text = after
        r = await iq.send()
        items = list(r['pubsub']['items'])
        if not items: break
        pages.append(len(items))
        got = r.xml.find('.//{%s}set' % RSM)
        after = got.find('{%s}last' % RSM).text
        count = got.find('{%s}count' % RSM).text
    print('pages', pages, 'count', count)
    r = await bob.plugin['xep_0060'].get_items(PS, 'home/living/temp', max_items=2)
    print('last two', texts(r['pubsub']['items']))
    # A whitelist node: closed to non-members.
    form = alice.plugin['xep_0004'].make_form(ftype='submit')
    form.add_field(var='pubsub#access_model', value='whitelist')
    await alice.plugin['xep_0060'].create_node(PS, 'private', config=form)
    try:
        await carol.plugin['xep_0060'].get_items(PS, 'private')
    except slixmpp.exceptions.IqError as e:
        print('private', error_of(e))
    gone = asyncio.ensure_future(next_event(bob, 'pubsub_retract'))
    await alice.plugin['xep_0060'].retract(PS, 'home/living/temp', 'r0', notify=True)
    m = await gone
    print('retracted', m['pubsub_event']['items']['retract']['id'])
    subs = await bob.plugin['xep_0060'].get_subscriptions(PS)
    print('bob subs', [s['node'] for s in subs['pubsub']['subscriptions']])
    for c in (alice, bob, carol): c.disconnect()
run(main)
"#
    );
    let out = run(&p, &first, &[]);
    assert!(out.contains("service {('pubsub', 'service'"), "{out}");
    assert!(out.contains("taken conflict/"), "{out}");
    assert!(out.contains("bob subscribed"), "{out}");
    assert!(
        out.contains("bob got r0 20.5 from pubsub.localhost"),
        "{out}"
    );
    assert!(out.contains("bob may not publish forbidden/"), "{out}");
    assert!(out.contains("carol outcast forbidden/"), "{out}");
    assert!(out.contains("pages [5, 5, 2] count 12"), "{out}");
    assert!(out.contains("last two 30,31"), "{out}");
    assert!(out.contains("private not-allowed/closed-node"), "{out}");
    assert!(out.contains("retracted r0"), "{out}");
    assert!(out.contains("bob subs ['home/living/temp']"), "{out}");

    p.stop();
    p.spawn();
    let after = format!(
        "{PUBSUB}{HELPERS}{}",
        r#"
async def main():
    alice = await online(ps_client('alice@localhost', 'wonderland'))
    bob = await online(ps_client('bob@localhost', 'builder'))
    for c in (alice, bob): c.send_presence()
    r = await bob.plugin['xep_0060'].get_items(PS, 'home/living/temp')
    print('after restart', len(r['pubsub']['items']), 'items, last', list(r['pubsub']['items'])[-1]['id'])
    got = asyncio.ensure_future(next_event(bob, 'pubsub_publish'))
    await alice.plugin['xep_0060'].publish(PS, 'home/living/temp', id='again', payload=reading('19'))
    m = await got
    print('still subscribed', m['pubsub_event']['items']['item']['id'])
    gone = asyncio.ensure_future(next_event(bob, 'pubsub_delete'))
    await alice.plugin['xep_0060'].delete_node(PS, 'home/living/temp')
    await gone
    print('deleted seen')
    try:
        await bob.plugin['xep_0060'].get_items(PS, 'home/living/temp')
    except slixmpp.exceptions.IqError as e:
        print('gone', e.iq['error']['condition'])
    alice.disconnect(); bob.disconnect()
run(main)
"#
    );
    let out = run(&p, &after, &[]);
    assert!(out.contains("after restart 11 items, last r11"), "{out}");
    assert!(out.contains("still subscribed again"), "{out}");
    assert!(out.contains("deleted seen"), "{out}");
    assert!(out.contains("gone item-not-found"), "{out}");
}

#[test]
fn raw_refusals_and_limits() {
    let p = Petrel::start("[pubsub]\nmax_nodes = 1\nmax_items = 2\n").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    let mut alice = Raw::login(p.addrs["c2s"][0], "alice", "wonderland", "a");
    let mut bob = Raw::login(p.addrs["c2s"][0], "bob", "builder", "b");
    let ps = "http://jabber.org/protocol/pubsub";
    // An instant node gets a name from the service.
    alice.send(&format!(
        "<iq type='set' id='c1' to='pubsub.localhost'><pubsub xmlns='{ps}'><create/></pubsub></iq>"
    ));
    let r = alice.expect("</iq>");
    assert!(
        r.contains("type='result'") && r.contains("<create node='"),
        "{r}"
    );
    // max_nodes = 1.
    alice.send(&format!("<iq type='set' id='c2' to='pubsub.localhost'><pubsub xmlns='{ps}'><create node='two'/></pubsub></iq>"));
    let r = alice.expect("</iq>");
    assert!(
        r.contains("<not-allowed") && r.contains("<max-nodes-exceeded"),
        "{r}"
    );
    // Subscribing someone else's JID.
    let name = {
        alice.send("<iq type='get' id='d' to='pubsub.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
        let r = alice.expect("</iq>");
        r.split("node='")
            .nth(1)
            .unwrap()
            .split('\'')
            .next()
            .unwrap()
            .to_string()
    };
    bob.send(&format!("<iq type='set' id='s1' to='pubsub.localhost'><pubsub xmlns='{ps}'><subscribe node='{name}' jid='alice@localhost'/></pubsub></iq>"));
    let r = bob.expect("</iq>");
    assert!(
        r.contains("<bad-request") && r.contains("<invalid-jid"),
        "{r}"
    );
    bob.send(&format!("<iq type='set' id='u1' to='pubsub.localhost'><pubsub xmlns='{ps}'><unsubscribe node='{name}' jid='bob@localhost'/></pubsub></iq>"));
    let r = bob.expect("</iq>");
    assert!(
        r.contains("<unexpected-request") && r.contains("<not-subscribed"),
        "{r}"
    );
    // max_items above the limit; an unknown node; no node id.
    alice.send(&format!("<iq type='set' id='cf' to='pubsub.localhost'><pubsub xmlns='{ps}#owner'><configure node='{name}'><x xmlns='jabber:x:data' type='submit'><field var='pubsub#max_items'><value>3</value></field></x></configure></pubsub></iq>"));
    assert!(alice.expect("</iq>").contains("<not-acceptable"));
    bob.send(&format!("<iq type='get' id='i1' to='pubsub.localhost'><pubsub xmlns='{ps}'><items node='nope'/></pubsub></iq>"));
    assert!(bob.expect("</iq>").contains("<item-not-found"));
    bob.send(&format!(
        "<iq type='get' id='i2' to='pubsub.localhost'><pubsub xmlns='{ps}'><items/></pubsub></iq>"
    ));
    assert!(bob.expect("</iq>").contains("<nodeid-required"));
    // Only an owner configures or deletes.
    bob.send(&format!("<iq type='set' id='x1' to='pubsub.localhost'><pubsub xmlns='{ps}#owner'><delete node='{name}'/></pubsub></iq>"));
    assert!(bob.expect("</iq>").contains("<forbidden"));
    // The last owner cannot leave.
    alice.send(&format!("<iq type='set' id='a1' to='pubsub.localhost'><pubsub xmlns='{ps}#owner'><affiliations node='{name}'><affiliation jid='alice@localhost' affiliation='none'/></affiliations></pubsub></iq>"));
    assert!(alice.expect("</iq>").contains("<not-acceptable"));
    // max_items = 2 keeps the newest two.
    for i in 0..3 {
        alice.send(&format!("<iq type='set' id='p{i}' to='pubsub.localhost'><pubsub xmlns='{ps}'><publish node='{name}'><item id='i{i}'><x xmlns='urn:x'>{i}</x></item></publish></pubsub></iq>"));
        assert!(alice.expect("</iq>").contains("type='result'"));
    }
    bob.send(&format!("<iq type='get' id='i3' to='pubsub.localhost'><pubsub xmlns='{ps}'><items node='{name}'/></pubsub></iq>"));
    let r = bob.expect("</iq>");
    assert!(
        !r.contains("id='i0'") && r.contains("id='i1'") && r.contains("id='i2'"),
        "{r}"
    );
    // Messages to the service are refused; the server lists it.
    alice.send("<message to='pubsub.localhost' id='m'><body>hi</body></message>");
    assert!(alice.expect("</message>").contains("<service-unavailable"));
    alice.send("<iq type='get' id='dit' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    assert!(alice.expect("</iq>").contains("jid='pubsub.localhost'"));
}
