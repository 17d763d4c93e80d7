// MQTT.js with a Topic Alias Maximum of 2: the server assigns aliases to
// the topics it sends and reuses them (an empty topic name with the alias),
// reassigning the least recently used one for a third topic; MQTT.js
// resolves each message's topic from them. Reports every message as
// [topic, payload, alias or null, topic name as it came on the wire].
const mqtt = require('mqtt');
const [port, token] = process.argv.slice(2);
const res = { connack: null, got: [], error: null };
const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
  protocolVersion: 5, clientId: 'mqttjs-alias', reconnectPeriod: 0,
  properties: { authenticationMethod: 'X-OAUTH2', authenticationData: Buffer.from(token), topicAliasMaximum: 2 },
});
const order = ['ta/a', 'ta/a', 'ta/b', 'ta/a', 'ta/c', 'ta/c', 'ta/b'];
c.on('connect', (ack) => {
  res.connack = ack.reasonCode;
  c.subscribe('ta/#', { qos: 1 }, async () => {
    for (let i = 0; i < order.length; i++) {
      await c.publishAsync(order[i], `m${i}`, { qos: 1 });
    }
  });
});
c.on('packetreceive', (p) => {
  if (p.cmd === 'publish') {
    res.got.push([null, p.payload.toString(), (p.properties && p.properties.topicAlias) || null, p.topic]);
  }
});
c.on('message', (t, m) => {
  const e = res.got.find((g) => g[1] === m.toString());
  if (e) e[0] = t;
  if (res.got.filter((g) => g[0] !== null).length === order.length) c.end();
});
c.on('error', (e) => { res.error = String(e.code ?? e.message); c.end(true); });
c.on('close', () => { console.log(JSON.stringify(res)); process.exit(0); });
setTimeout(() => { console.log(JSON.stringify(res)); process.exit(1); }, 10000);
