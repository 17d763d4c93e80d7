//! The MQTT ⇄ XMPP bridge with independent clients on both ends: paho-mqtt
//! and mosquitto_pub publishing and subscribing, slixmpp (`xep_0060`)
//! subscribing to nodes, publishing items and chatting with a device.
//! JSON, text and binary payloads; retained message ⇄ last item; a
//! two-way rule that does not loop; denied pairs that receive nothing;
//! direct addressing both ways; a QoS 1 message acknowledged over MQTT
//! still an item after kill -9.

mod common;

use std::process::Command;

use common::slixmpp::{run, PUBSUB};
use common::{have_program, Petrel};

const CONFIG: &str = r##"
[[bridge.rule]]
mqtt = "sensors/+/reading"
node = "sensors/{1}"
publishers = ["alice@localhost"]

[[bridge.rule]]
mqtt = "private/+"
node = "private/{1}"
direction = "to_xmpp"
access = "whitelist"
owners = ["alice@localhost"]

[[mqtt_acl]]
permission = "deny"
action = "subscribe"
topic = "sensors/hall/#"
account = "carol@localhost"

[[mqtt_acl]]
permission = "allow"
action = "all"
topic = "#"
"##;

fn server() -> Petrel {
    let p = Petrel::start(CONFIG).with_user_and_client();
    for (u, pw) in [
        ("bob", "builder"),
        ("carol", "queen"),
        ("thermo", "t-secret"),
    ] {
        p.ctl_ok(&["register", u, "localhost", pw]);
    }
    p
}

/// Shared by the scripts: a paho client that records what it receives and
/// the reason codes of its acknowledgements, and slixmpp helpers.
const HELPERS: &str = r#"
import json, base64
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
MQTT_PORT = int(ARGS[0])
NS_EVENT = '{http://jabber.org/protocol/pubsub#event}'

class Device:
    def __init__(self, cid, user, token, v5=True, will=None):
        self.got, self.acks, self.connack = [], {}, None
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=proto)
        c.username_pw_set(user, token)
        if will:
            c.will_set(will[0], will[1], qos=1)
        # paho calls these on its own thread; poke() wakes until().
        c.on_connect = lambda c, u, f, rc, p: (setattr(self, 'connack', rc.value), poke())
        c.on_message = lambda c, u, m: (self.got.append(m), poke())
        c.on_publish = lambda c, u, mid, rc, p: (self.acks.__setitem__(mid, rc.value), poke())
        self.subacks = []
        c.on_subscribe = lambda c, u, mid, codes, p: (
            self.subacks.append([x.value for x in codes]), poke())
        c.connect('127.0.0.1', MQTT_PORT)
        c.loop_start()
        self.c = c

    async def until(self, cond, what, timeout=15):
        await until(cond, what, timeout)

    async def up(self):
        await self.until(lambda: self.connack is not None, 'connack')
        assert self.connack == 0, self.connack

    async def subscribe(self, topic, qos=1):
        n = len(self.subacks)
        self.c.subscribe(topic, qos)
        await self.until(lambda: len(self.subacks) > n, 'suback')
        return self.subacks[-1]

    async def publish(self, topic, payload, qos=1, retain=False, ct=None, props=()):
        p = Properties(PacketTypes.PUBLISH)
        if ct: p.ContentType = ct
        if props: p.UserProperty = list(props)
        mid = self.c.publish(topic, payload, qos=qos, retain=retain,
                             properties=p if (ct or props) else None).mid
        await self.until(lambda: mid in self.acks, 'puback')
        return self.acks[mid]

    async def received(self, n, what):
        await self.until(lambda: len(self.got) >= n, what)

    def close(self):
        self.c.disconnect(); self.c.loop_stop()

def payload_of(m):
    el = m['pubsub_event']['items']['item'].xml[0]
    return el.tag, el.text, dict(el.attrib)

def headers_of(m):
    h = m.xml.find('{http://jabber.org/protocol/shim}headers')
    return [] if h is None else [(x.get('name'), x.text) for x in h]

def data(text):
    return ET.fromstring("<data xmlns='urn:petrel:mqtt:0'>%s</data>" % text)
"#;

/// MQTT → XMPP with each kind of payload, XMPP → MQTT, no loop, and
/// retained message ⇄ last item, then kill -9: what was acknowledged is
/// still there.
#[test]
fn payloads_cross_both_ways_once_and_retained_is_the_last_item() {
    let mut p = server();
    // The device's token may use MQTT only: the rule lets it feed a node.
    let device = p.token("thermo@localhost", 3600, "mqtt");
    let script = format!(
        "{PUBSUB}{HELPERS}{}",
        r#"
async def main():
    alice = await online(ps_client('alice@localhost', 'wonderland'))
    alice.send_presence()
    # The rule's node is made on first use (here: alice's subscription).
    r = await alice.plugin['xep_0060'].subscribe(PS, 'sensors/kitchen')
    print('subscribed', r['pubsub']['subscription']['subscription'])
    dev = Device('thermo-1', 'thermo', ARGS[1])
    await dev.up()
    print('suback', await dev.subscribe('sensors/+/reading'))
    codes = []
    codes.append(await dev.publish('sensors/kitchen/reading', '{"temp": 21.5}',
                                   ct='application/json', props=[('unit', 'C')]))
    codes.append(await dev.publish('sensors/kitchen/reading', 'dry <ok> & "fine"'))
    codes.append(await dev.publish('sensors/kitchen/reading', bytes([0, 1, 255, 13])))
    print('pubacks', codes)
    await events(alice, 3, 'three items')
    for m in alice.events[:3]:
        tag, text, attrs = payload_of(m)
        print('item', tag, text, attrs.get('encoding'), m['pubsub_event']['items']['item']['publisher'])
    print('headers', headers_of(alice.events[0]))
    # alice answers through the node: one MQTT message, one notification
    # (her own subscription), and nothing bridged back.
    await alice.plugin['xep_0060'].publish(PS, 'sensors/kitchen', id='sp1', payload=data('22.0'))
    await dev.received(4, 'the item as MQTT')
    m = dev.got[3]
    props = dict(m.properties.UserProperty)
    print('mqtt', m.topic, m.payload.decode(), m.retain, props.get('xmpp-publisher'),
          props.get('xmpp-item-id'), getattr(m.properties, 'ContentType', None))
    # A last message from the device marks the end of what could come.
    await dev.publish('sensors/kitchen/reading', 'end')
    await events(alice, 5, 'the end marker')
    await dev.received(5, 'own end marker')
    await settled(alice)
    print('counts', len(alice.events), len(dev.got))
    # Retained message <-> last item: a new MQTT subscriber gets the last
    # value as a retained message; a new XMPP subscriber the last item.
    late = Device('thermo-late', 'thermo', ARGS[1])
    await late.up()
    await late.subscribe('sensors/kitchen/reading')
    await late.received(1, 'the retained message')
    print('retained', late.got[0].payload.decode(), late.got[0].retain)
    # Alice's item, retained as it crossed, was replaced by the device's
    # 'end' (a device publish is not retained unless it says so).
    bob = await online(ps_client('bob@localhost', 'builder'))
    got = asyncio.ensure_future(next_event(bob, 'pubsub_publish'))
    await bob.plugin['xep_0060'].subscribe(PS, 'sensors/kitchen')
    m = await got
    print('last item', payload_of(m)[1])
    # A will on a bridged topic crosses too (MQTT 5 reason 0x04 sends it).
    await alice.plugin['xep_0060'].subscribe(PS, 'sensors/porch')
    n = len(alice.events)
    w = Device('thermo-w', 'thermo', ARGS[1], will=('sensors/porch/reading', 'gone'))
    await w.up()
    from paho.mqtt.reasoncodes import ReasonCode
    w.c.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
    await events(alice, n + 1, 'the will')
    print('will', alice.events[-1]['pubsub_event']['items']['node'], payload_of(alice.events[-1])[1])
    w.c.loop_stop()
    for c in (dev, late): c.close()
    for c in (alice, bob): c.disconnect()

run(main)
"#
    );
    let out = run(&p, &script, &[&p.mqtt().port().to_string(), &device]);
    let line = |k: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_else(|| panic!("no {k} in\n{out}"))
            .to_string()
    };
    assert_eq!(line("subscribed"), "subscribed subscribed");
    assert_eq!(line("pubacks"), "pubacks [0, 0, 0]", "{out}");
    let items: Vec<&str> = out.lines().filter(|l| l.starts_with("item ")).collect();
    assert_eq!(
        items,
        [
            "item {urn:xmpp:json:0}json {\"temp\": 21.5} None thermo@localhost",
            "item {urn:petrel:mqtt:0}data dry <ok> & \"fine\" None thermo@localhost",
            "item {urn:petrel:mqtt:0}data AAH/DQ== base64 thermo@localhost",
        ],
        "{out}"
    );
    assert_eq!(
        line("headers"),
        "headers [('Content-Type', 'application/json'), ('unit', 'C')]"
    );
    assert_eq!(
        line("mqtt"),
        "mqtt sensors/kitchen/reading 22.0 False alice@localhost sp1 None",
        "{out}"
    );
    // 3 device items + alice's own + the end marker reached alice; the
    // device got its 4 publishes back (no No Local) plus alice's one: her
    // item did not come back as a sixth item, nor the device's as MQTT.
    assert_eq!(line("counts"), "counts 5 5", "{out}");
    assert_eq!(line("retained"), "retained 22.0 True", "{out}");
    assert_eq!(line("last item"), "last item end", "{out}");
    assert_eq!(line("will"), "will sensors/porch gone", "{out}");

    // QoS 1 acknowledged means stored: kill -9 and the items are there.
    p.crash_and_restart();
    let after = format!(
        "{PUBSUB}{HELPERS}{}",
        r#"
async def main():
    alice = await online(ps_client('alice@localhost', 'wonderland'))
    r = await alice.plugin['xep_0060'].get_items(PS, 'sensors/kitchen')
    print('kept', [i.xml[0].text for i in r['pubsub']['items']])
    alice.disconnect()

run(main)
"#
    );
    let out = run(&p, &after, &[&p.mqtt().port().to_string()]);
    assert!(
        out.contains("kept ['{\"temp\": 21.5}', 'dry <ok> & \"fine\"', 'AAH/DQ==', '22.0', 'end']"),
        "{out}"
    );
}

/// What may not cross does not: a token limited to other topics, an XMPP
/// account that is not a publisher, an MQTT subscriber an access rule
/// keeps from a topic, a whitelist node.
#[test]
fn denied_pairs_receive_nothing() {
    let p = server();
    let narrow = p.token("thermo@localhost", 3600, "mqtt mqtt:publish:other/#");
    let device = p.token("thermo@localhost", 3600, "mqtt");
    let carol = p.token("carol@localhost", 3600, "mqtt");
    let script = format!(
        "{PUBSUB}{HELPERS}{}",
        r#"
async def main():
    alice = await online(ps_client('alice@localhost', 'wonderland'))
    bob = await online(ps_client('bob@localhost', 'builder'))
    for c in (alice, bob): c.send_presence()
    await alice.plugin['xep_0060'].subscribe(PS, 'sensors/hall')
    narrow = Device('thermo-n', 'thermo', ARGS[1])
    dev = Device('thermo-1', 'thermo', ARGS[2])
    watcher = Device('carol-w', 'carol', ARGS[3])
    for d in (narrow, dev, watcher): await d.up()
    print('carol suback', await watcher.subscribe('sensors/#'))
    print('narrow', await narrow.publish('sensors/hall/reading', 'no'))
    # bob is no publisher of the rule's nodes.
    try:
        await bob.plugin['xep_0060'].publish(PS, 'sensors/hall', payload=data('no'))
    except slixmpp.exceptions.IqError as e:
        print('bob', error_of(e))
    # alice is: her item reaches MQTT, but not carol (denied the hall).
    await alice.plugin['xep_0060'].publish(PS, 'sensors/hall', payload=data('hall'))
    await alice.plugin['xep_0060'].publish(PS, 'sensors/kitchen', payload=data('kitchen'))
    await watcher.received(1, 'the kitchen item')
    # The marker: the device's allowed publish arrives after the refused ones.
    print('dev', await dev.publish('sensors/hall/reading', 'yes'))
    await events(alice, 2, 'hall items')
    await settled(alice, bob)
    print('alice saw', [payload_of(m)[1] for m in alice.events])
    print('carol saw', [(m.topic, m.payload.decode()) for m in watcher.got])
    # A whitelist node: the device feeds it, bob may not read it.
    print('private', await dev.publish('private/diary', 'secret'))
    try:
        await bob.plugin['xep_0060'].subscribe(PS, 'private/diary')
    except slixmpp.exceptions.IqError as e:
        print('bob private', error_of(e))
    r = await alice.plugin['xep_0060'].get_items(PS, 'private/diary')
    print('alice private', [i.xml[0].text for i in r['pubsub']['items']])
    # A rule's names are the bridge's: bob cannot take one first, and
    # reading one that does not exist yet creates nothing.
    try:
        await bob.plugin['xep_0060'].create_node(PS, 'sensors/attic')
    except slixmpp.exceptions.IqError as e:
        print('bob create', error_of(e))
    try:
        await bob.plugin['xep_0060'].get_items(PS, 'sensors/cellar')
    except slixmpp.exceptions.IqError as e:
        print('bob items', error_of(e))
    # to_xmpp only: alice's item there does not become MQTT.
    await watcher.subscribe('private/#')
    await alice.plugin['xep_0060'].publish(PS, 'private/diary', payload=data('mine'))
    print('dev2', await dev.publish('sensors/kitchen/reading', 'marker'))
    await watcher.until(lambda: any(m.payload == b'marker' for m in watcher.got), 'marker')
    print('carol private', [m.topic for m in watcher.got if m.topic.startswith('private')])
    for d in (narrow, dev, watcher): d.close()
    for c in (alice, bob): c.disconnect()

run(main)
"#
    );
    let out = run(
        &p,
        &script,
        &[&p.mqtt().port().to_string(), &narrow, &device, &carol],
    );
    let has = |s: &str| assert!(out.contains(s), "no {s:?} in\n{out}");
    has("carol suback [1]");
    has("narrow 135");
    has("bob forbidden/");
    has("dev 0");
    // alice's own hall item and the device's allowed one; never the refused.
    has("alice saw ['hall', 'yes']");
    // carol: the kitchen item and the device's marker later; no hall topic.
    assert!(!out.contains("'sensors/hall/reading'"), "{out}");
    has("carol saw [('sensors/kitchen/reading', 'kitchen')");
    has("private 0");
    has("bob private not-allowed/closed-node");
    has("alice private ['secret']");
    has("carol private []");
    has("bob create forbidden/");
    has("bob items item-not-found/");
}

/// Direct addressing: a device writes to a chat user (offline first, then
/// online) and the user answers the device (its JID names the account:
/// another account's session with the same client id hears nothing);
/// unknown addressees are told.
#[test]
fn a_device_and_a_chat_user_talk_directly() {
    let p = server();
    let device = p.token("thermo@localhost", 3600, "mqtt");
    let carol = p.token("carol@localhost", 3600, "mqtt");
    let port = p.mqtt().port().to_string();
    // mosquitto_pub (MQTT 3.1.1, the token as password) before alice is
    // online: the message waits offline.
    if have_program("mosquitto_pub") {
        let st = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-i", "door-1"])
            .args(["-u", "thermo", "-P", &device])
            .args(["-t", "$xmpp/alice@localhost", "-m", "door opened"])
            .status()
            .unwrap();
        assert!(st.success());
    } else {
        assert!(
            std::env::var_os("PETREL_REQUIRE_PEERS").is_none(),
            "mosquitto_pub is required"
        );
    }
    let mosquitto = have_program("mosquitto_pub");
    let script = format!(
        "{PUBSUB}{HELPERS}{}",
        r#"
async def main():
    alice = make('alice@localhost', 'wonderland')
    inbox = []
    alice.add_event_handler('message', lambda m: (inbox.append(m), poke()))
    await online(alice)
    alice.send_presence()
    if ARGS[2] == 'yes':
        await until(lambda: inbox, 'the offline message')
        print('offline', inbox[0]['from'], inbox[0]['type'], inbox[0]['body'])
    dev = Device('door-1', 'thermo', ARGS[1])
    await dev.up()
    print('suback', await dev.subscribe('$xmpp/inbox/#'))
    n = len(inbox)
    print('direct', await dev.publish('$xmpp/alice@localhost', 'still open'))
    await dev.until(lambda: len(inbox) > n, 'the live message')
    print('live', inbox[-1]['from'], inbox[-1]['body'])
    # carol's session with the same client id hears nothing of it.
    other = Device('door-1', 'carol', ARGS[3])
    await other.up()
    await other.subscribe('$xmpp/inbox/#')
    alice.send_message(mto='thermo@mqtt.localhost/door-1', mbody='close it', mtype='chat')
    await dev.received(1, 'the answer')
    m = dev.got[0]
    print('answer', m.topic, m.payload.decode())
    # To the bare JID: each of thermo's sessions that listens.
    alice.send_message(mto='thermo@mqtt.localhost', mbody='all doors', mtype='chat')
    await dev.received(2, 'the answer to all')
    print('to all', dev.got[1].payload.decode())
    print('carol got', len(other.got))
    other.close()
    print('nobody', await dev.publish('$xmpp/nobody@localhost', 'x'))
    print('binary', await dev.publish('$xmpp/alice@localhost', bytes([0, 1])))
    errs = []
    alice.add_event_handler('message_error', lambda m: (errs.append(m), poke()))
    alice.send_message(mto='thermo@mqtt.localhost/door-9', mbody='anyone?', mtype='chat')
    await dev.until(lambda: errs, 'the error')
    print('unknown', errs[0]['error']['condition'])
    dev.close()
    alice.disconnect()

run(main)
"#
    );
    let out = run(
        &p,
        &script,
        &[&port, &device, if mosquitto { "yes" } else { "no" }, &carol],
    );
    let has = |s: &str| assert!(out.contains(s), "no {s:?} in\n{out}");
    if mosquitto {
        has("offline thermo@mqtt.localhost/door-1 chat door opened");
    }
    has("suback [1]");
    has("direct 0");
    has("live thermo@mqtt.localhost/door-1 still open");
    has("answer $xmpp/inbox/alice@localhost close it");
    has("to all all doors");
    has("carol got 0");
    has("nobody 144");
    has("binary 153");
    has("unknown service-unavailable");
}

/// README's worked example, as written there: a thermostat (mosquitto
/// clients, an MQTT-only token) reports, alice (slixmpp) reads the
/// temperature and sends a set-point the thermostat gets.
#[test]
fn the_readme_thermostat_example() {
    if !have_program("mosquitto_pub") {
        assert!(
            std::env::var_os("PETREL_REQUIRE_PEERS").is_none(),
            "mosquitto clients are required"
        );
        return;
    }
    let readme = include_str!("../README.md");
    let start = readme
        .find("# petrel.toml\n")
        .expect("the example's config");
    let rules = &readme[start..];
    let rules = &rules[..rules.find("```").unwrap()];
    let p = Petrel::start(rules).with_user_and_client();
    p.ctl_ok(&["register", "thermostat", "localhost", "device-secret"]);
    let token = p.token("thermostat@localhost", 31_536_000, "mqtt");
    let port = p.mqtt().port().to_string();
    let mosquitto = |args: &[&str]| {
        let out = Command::new(args[0])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                "thermostat",
                "-P",
                &token,
            ])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    mosquitto(&[
        "mosquitto_pub",
        "-q",
        "1",
        "-t",
        "home/living/temperature",
        "-m",
        r#"{"celsius": 19.5}"#,
    ]);
    let script = r#"
from slixmpp.xmlstream import ET
async def main():
    alice = make('alice@localhost', 'wonderland')
    alice.register_plugin('xep_0060')
    await online(alice)
    alice.send_presence()
    got = asyncio.ensure_future(next_event(alice, 'pubsub_publish'))
    await alice.plugin['xep_0060'].subscribe('pubsub.localhost', 'home/living/temperature')
    m = await got
    item = m['pubsub_event']['items']['item']
    print('reading', item['publisher'], item.xml[0].tag, item.xml[0].text)
    await alice.plugin['xep_0060'].publish('pubsub.localhost', 'home/living/setpoint',
        payload=ET.fromstring("<json xmlns='urn:xmpp:json:0'>{\"celsius\": 21}</json>"))
    alice.disconnect()

run(main)
"#;
    let out = run(&p, script, &[]);
    assert!(
        out.contains(r#"reading thermostat@localhost {urn:xmpp:json:0}json {"celsius": 19.5}"#),
        "{out}"
    );
    // The set-point is the topic's retained message: the thermostat gets
    // it whenever it subscribes.
    let got = mosquitto(&[
        "mosquitto_sub",
        "-t",
        "home/+/setpoint",
        "-v",
        "-C",
        "1",
        "-W",
        "20",
    ]);
    assert_eq!(got.trim(), r#"home/living/setpoint {"celsius": 21}"#);
}
