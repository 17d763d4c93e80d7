//! slixmpp (Python) scripts against a test server: a prelude with a client
//! factory and small async helpers, and a runner that passes the server's
//! c2s ports.
#![allow(dead_code)]

use std::time::Duration;

use super::python::run_script;
use super::Petrel;

/// Shared by every script: a client factory and small async helpers.
/// Certificates are not verified (the server runs on a development cert).
pub const PRELUDE: &str = r#"
import asyncio, ssl, sys
import slixmpp

HOST = sys.argv[1]
STARTTLS_PORT = int(sys.argv[2])
TLS_PORT = int(sys.argv[3])
ARGS = sys.argv[4:]

def make(jid, password='', mech=None, token=None, direct_tls=False):
    kw = {'sasl_mech': mech} if mech else {}
    c = slixmpp.ClientXMPP(jid, password, **kw)
    if token:
        c.credentials['access_token'] = token
    c.ssl_context.check_hostname = False
    c.ssl_context.verify_mode = ssl.CERT_NONE
    if direct_tls:
        c.enable_starttls = False
        c.enable_plaintext = False
        c.enable_direct_tls = True
    else:
        c.enable_direct_tls = False
        c.enable_starttls = True
    c.register_plugin('xep_0030')
    c.register_plugin('xep_0199')
    c.register_plugin('xep_0092')
    c._port = TLS_PORT if direct_tls else STARTTLS_PORT
    return c

async def online(c, timeout=20):
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    def ok(_):
        if not fut.done(): fut.set_result(True)
    def bad(_):
        if not fut.done(): fut.set_exception(RuntimeError('failed_auth'))
    c.add_event_handler('session_start', ok)
    c.add_event_handler('failed_auth', bad)
    c.connect(HOST, c._port)
    await asyncio.wait_for(fut, timeout)
    return c

def encrypted(c):
    return 'starttls' in c.features or isinstance(
        c.transport.get_extra_info('ssl_object'), ssl.SSLObject)

def mech(c):
    return c.plugin['feature_mechanisms'].mech.name

async def next_event(c, name, pred=lambda _: True, timeout=15):
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    def h(x):
        if not fut.done() and pred(x): fut.set_result(x)
    c.add_event_handler(name, h)
    try:
        return await asyncio.wait_for(fut, timeout)
    finally:
        c.del_event_handler(name, h)

async def settled(*clients):
    # One ping round trip per client: the server has handled what each
    # sent before it (a condition, not a fixed wait).
    for c in clients:
        await c.plugin['xep_0199'].ping('localhost', timeout=10)

# Waiting on a condition: whoever changes what a condition looks at (a
# slixmpp handler, or a paho callback on its own thread) calls poke(), and
# until() looks again; a deadline bounds every wait.
LOOP = None
CHANGED = asyncio.Event()

def poke():
    if LOOP is not None:
        LOOP.call_soon_threadsafe(CHANGED.set)

async def until(cond, what, timeout=15):
    deadline = LOOP.time() + timeout
    while not cond():
        CHANGED.clear()
        if cond():
            return
        left = deadline - LOOP.time()
        if left <= 0:
            raise RuntimeError('timed out waiting for ' + what)
        try:
            await asyncio.wait_for(CHANGED.wait(), left)
        except asyncio.TimeoutError:
            pass

def run(main):
    async def go():
        global LOOP
        LOOP = asyncio.get_running_loop()
        await asyncio.wait_for(main(), 60)
    asyncio.run(go())
"#;

/// For scripts using the XEP-0060 service on `pubsub.localhost`: a client
/// with the pubsub plugins that records the notifications it gets
/// (`c.events`), and the error of a refused request with its
/// `pubsub#errors` condition (`condition/app,…`).
pub const PUBSUB: &str = r#"
from slixmpp.xmlstream import ET
PS = 'pubsub.localhost'

def ps_client(jid, pw):
    c = make(jid, pw)
    for x in ('xep_0004', 'xep_0059', 'xep_0060', 'xep_0131'):
        c.register_plugin(x)
    c.events = []
    c.add_event_handler('pubsub_publish', lambda m: (c.events.append(m), poke()))
    return c

async def events(c, n, what, timeout=15):
    await until(lambda: len(c.events) >= n, what, timeout)

def error_of(e):
    app = [c.tag.split('}')[1] for c in e.iq.xml.find('{jabber:client}error')
           if c.tag.startswith('{http://jabber.org/protocol/pubsub#errors}')]
    return '%s/%s' % (e.iq['error']['condition'], ','.join(app))
"#;

pub fn script(body: &str) -> String {
    format!("{PRELUDE}\n{body}\n")
}

pub fn run(p: &Petrel, body: &str, extra: &[&str]) -> String {
    let starttls = p.addrs["c2s"][0].port().to_string();
    let tls = p.addrs["c2s"][1].port().to_string();
    let mut args = vec!["127.0.0.1", starttls.as_str(), tls.as_str()];
    args.extend_from_slice(extra);
    let (ok, out, err) = run_script(&script(body), &args, Duration::from_secs(90));
    assert!(ok, "script failed\nstdout:\n{out}\nstderr:\n{err}");
    out
}
