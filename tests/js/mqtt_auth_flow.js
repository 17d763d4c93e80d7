const mqtt = require('mqtt');
const [port, token] = process.argv.slice(2);
const res = { asked: false, connack: null, got: null, error: null };
const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
  protocolVersion: 5, clientId: 'mqttjs-flow', reconnectPeriod: 0,
  properties: { authenticationMethod: 'X-OAUTH2' },
});
c.handleAuth = (packet, cb) => {
  res.asked = packet.reasonCode === 0x18;
  cb(null, { cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'X-OAUTH2', authenticationData: Buffer.from(token) } });
};
c.on('connect', (ack) => {
  res.connack = ack.reasonCode;
  res.method = ack.properties && ack.properties.authenticationMethod;
  c.subscribe('js/t', { qos: 1 }, () => c.publish('js/t', 'hi', { qos: 1 }));
});
c.on('message', (t, m) => { res.got = [t, m.toString()]; c.end(); });
c.on('error', (e) => { res.error = String(e.code ?? e.message); c.end(true); });
c.on('close', () => { console.log(JSON.stringify(res)); process.exit(0); });
setTimeout(() => { console.log(JSON.stringify(res)); process.exit(1); }, 10000);
