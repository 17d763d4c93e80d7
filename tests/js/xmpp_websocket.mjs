// xmpp.js (@xmpp/client 0.14) against Petrel over WebSocket (RFC 7395):
// finds the endpoint by XEP-0156 (host-meta.json on the HTTP listener),
// logs in with a password, sends a chat message to a peer and waits for
// one back. Prints one JSON line with what happened.
//
// Args: the HTTP(S) listener's base URL (http[s]://127.0.0.1:PORT), username,
// password, the peer's JID.
import { pathToFileURL } from "node:url";
import path from "node:path";

// The development certificate is self-signed (wss://); what is tested
// here is XMPP.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";
// Node 20 has no global WebSocket; xmpp.js uses the global one.
const { default: WebSocket } = await import(
  pathToFileURL(path.join(process.env.NODE_PATH, "ws/index.js")).href
);
globalThis.WebSocket ??= WebSocket;
const { client, xml } = await import(
  pathToFileURL(path.join(process.env.NODE_PATH, "@xmpp/client/index.js")).href
);

const [base, username, password, peer] = process.argv.slice(2);
const res = { service: null, jid: null, got: null, error: null, trace: [] };
const done = (code) => {
  console.log(JSON.stringify(res));
  process.exit(code);
};
setTimeout(() => {
  res.error = res.error ?? "timeout";
  done(1);
}, 20000);

try {
  const meta = await (await fetch(`${base}/.well-known/host-meta.json`)).json();
  const link = meta.links.find((l) => l.rel === "urn:xmpp:alt-connections:websocket");
  res.service = link.href;
  const x = client({ service: link.href, domain: "localhost", resource: "web", username, password });
  x.reconnect.stop();
  x.on("status", (st) => res.trace.push(st));
  x.on("error", (e) => {
    res.error = res.error ?? String(e.condition ?? e.message);
  });
  const reply = new Promise((resolve) =>
    x.on("stanza", (s) => {
      if (s.is("message") && s.getChildText("body")) resolve(s.getChildText("body"));
    }),
  );
  const up = new Promise((resolve) => x.once("online", resolve));
  x.start().catch((e) => res.trace.push(`start: ${e.name}`));
  const address = await up;
  res.jid = address.toString();
  await x.send(xml("presence"));
  await x.send(xml("message", { to: peer, type: "chat" }, xml("body", {}, "hello over websocket")));
  res.got = await reply;
  await x.stop();
  done(0);
} catch (e) {
  res.error = res.error ?? String(e);
  done(1);
}
