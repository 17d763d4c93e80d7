// MQTT.js over WebSocket (ws:// or wss:// at /mqtt, subprotocol "mqtt"):
// logs in with the token by MQTT 5 enhanced authentication, subscribes,
// and exchanges messages with a second MQTT.js client on plain TCP — one
// broker, whatever the transport. Reports what happened as JSON.
const mqtt = require('mqtt');
const [url, tcpPort, token] = process.argv.slice(2);
const res = { connack: null, protocol: null, got: [], tcpGot: [], error: null };
const opts = (id) => ({
  protocolVersion: 5, clientId: id, reconnectPeriod: 0, rejectUnauthorized: false,
  properties: { authenticationMethod: 'X-OAUTH2', authenticationData: Buffer.from(token) },
});
const ws = mqtt.connect(url, opts('over-ws'));
const tcp = mqtt.connect(`mqtt://127.0.0.1:${tcpPort}`, opts('over-tcp'));
const done = () => {
  if (res.got.length === 2 && res.tcpGot.length === 1) {
    ws.end(); tcp.end();
    console.log(JSON.stringify(res));
    process.exit(0);
  }
};
ws.on('connect', (ack) => {
  res.connack = ack.reasonCode;
  const s = ws.stream && (ws.stream.socket || ws.stream);
  res.protocol = (s && s.protocol) || null;
  ws.subscribe('ws/#', { qos: 1 }, () => {
    tcp.subscribe('tcp/#', { qos: 1 }, async () => {
      await ws.publishAsync('ws/self', 'from ws', { qos: 1 });
      await tcp.publishAsync('ws/other', 'from tcp', { qos: 1 });
      await ws.publishAsync('tcp/x', 'to tcp', { qos: 1 });
    });
  });
});
ws.on('message', (t, m) => { res.got.push([t, m.toString()]); done(); });
tcp.on('message', (t, m) => { res.tcpGot.push([t, m.toString()]); done(); });
for (const c of [ws, tcp]) {
  c.on('error', (e) => { res.error = String(e.code ?? e.message); console.log(JSON.stringify(res)); process.exit(1); });
}
setTimeout(() => { console.log(JSON.stringify(res)); process.exit(1); }, 10000);
