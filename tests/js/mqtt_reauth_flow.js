// MQTT.js: log in with an access token (enhanced auth X-OAUTH2), renew it
// with the refresh grant, re-authenticate the live session with AUTH 0x19
// and the new token, revoke the old token, and show the session carries on
// (a message published after all that still arrives). MQTT.js has no
// public call for re-authentication, so the AUTH packet goes through its
// packet writer.
const mqtt = require('mqtt');
const [port, base, clientId, access, refresh] = process.argv.slice(2);
const res = { connack: null, refreshed: false, reauth: null, revoked: null, got: [], error: null, closed: false };
const auth = (token) => ({ authenticationMethod: 'X-OAUTH2', authenticationData: Buffer.from(token) });
const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
  protocolVersion: 5, clientId: 'mqttjs-reauth', reconnectPeriod: 0,
  properties: auth(access),
});
c.handleAuth = (packet, cb) => {
  if (packet.reasonCode === 0) { res.reauth = 0; cb(null); afterReauth(); return; }
  cb(new Error('unexpected AUTH ' + packet.reasonCode));
};
const form = (o) => ({ method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(o).toString() });
async function afterReauth() {
  const r = await fetch(`${base}/oauth/revoke`, form({ token: access, client_id: clientId }));
  res.revoked = r.status;
  c.publish('js/r', 'after', { qos: 1 });
}
c.on('connect', (ack) => {
  res.connack = ack.reasonCode;
  c.subscribe('js/r', { qos: 1 }, async () => {
    c.publish('js/r', 'before', { qos: 1 });
    const r = await fetch(`${base}/oauth/token`, form({ grant_type: 'refresh_token', refresh_token: refresh, client_id: clientId }));
    const t = await r.json();
    res.refreshed = r.status === 200 && !!t.access_token;
    if (!res.refreshed) { res.error = JSON.stringify(t); c.end(); return; }
    c._sendPacket({ cmd: 'auth', reasonCode: 0x19, properties: auth(t.access_token) });
  });
});
c.on('message', (t, m) => { res.got.push(m.toString()); if (m.toString() === 'after') c.end(); });
c.on('error', (e) => { res.error = String(e.code ?? e.message); c.end(true); });
c.on('close', () => { res.closed = true; console.log(JSON.stringify(res)); process.exit(0); });
setTimeout(() => { console.log(JSON.stringify(res)); process.exit(1); }, 10000);
