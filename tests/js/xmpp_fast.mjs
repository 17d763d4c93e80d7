// xmpp.js (@xmpp/client 0.14) against Petrel over direct TLS: a password
// login by SASL2 that asks for a FAST token (XEP-0484), then a second
// client of the same installation that has no password, only that token,
// and logs in with HT-SHA-256-NONE; it sends a chat message and waits for
// one. Prints one JSON line with what happened.
//
// Args: service (xmpps://127.0.0.1:PORT), alice's password, the peer's JID.
// ESM-only package: imported by path from NODE_PATH (which ESM ignores).
import { pathToFileURL } from "node:url";
import path from "node:path";

// The development certificate is self-signed; what is tested here is XMPP.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";
const { client, xml } = await import(
  pathToFileURL(path.join(process.env.NODE_PATH, "@xmpp/client/index.js")).href
);

const [service, password, peer] = process.argv.slice(2);
const res = { first: null, mechanism: null, second: null, got: null, error: null, trace: [] };
const done = (code) => {
  console.log(JSON.stringify(res));
  process.exit(code);
};
setTimeout(() => {
  res.error = res.error ?? "timeout";
  done(1);
}, 20000);

// One installation: the same <user-agent id> for both clients.
const agent = "c7f0a9d2-3b1e-4c5a-9f8e-2d6b7a1c0e94";
function make(opts) {
  const x = client({
    service,
    domain: "localhost",
    resource: "js",
    userAgent: xml("user-agent", { id: agent }, xml("software", {}, "petrel-test")),
    ...opts,
  });
  x.reconnect.stop();
  // What each client saw and did, for a failure's report.
  x.on("status", (st) => res.trace.push(`${opts.password ? "a" : "b"}:${st}`));
  x.on("element", (el) => res.trace.push(`${opts.password ? "a" : "b"}<${el.name}`));
  x.on("error", (e) => {
    res.error = res.error ?? String(e.condition ?? e.message);
  });
  return x;
}

// Starts a client and waits for "online" itself: xmpp.js 0.14's start()
// can miss the stream's "open" event when the server's answer is parsed
// before the header's write callback has run, and then rejects with a
// TimeoutError although the client goes online.
function online(x) {
  const up = new Promise((resolve) => x.once("online", resolve));
  x.start().catch((e) => res.trace.push(`start: ${e.name}`));
  return up;
}

try {
  let saved = null;
  const a = make({ username: "alice", password });
  a.fast.saveToken = async (t) => {
    saved = t;
  };
  res.first = (await online(a)).toString();
  res.mechanism = saved?.mechanism ?? null;
  await a.stop();
  if (!saved) throw new Error("no FAST token after the password login");

  // No password at all: only the token can log this client in.
  const b = make({ username: "alice" });
  b.fast.fetchToken = async () => saved;
  b.on("stanza", (s) => {
    if (s.is("message") && s.getChildText("body")) {
      res.got = s.getChildText("body");
      b.stop().then(() => done(0));
    }
  });
  res.second = (await online(b)).toString();
  await b.send(xml("message", { to: peer, type: "chat" }, xml("body", {}, "sent after FAST")));
} catch (e) {
  res.error = String(e.condition ?? e.message);
  done(1);
}
