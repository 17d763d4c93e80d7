#!/usr/bin/env python3
"""Write the seed corpora for the mqtt_decode and mqtt_connection fuzz targets.

Each seed is one selector byte (see fuzz_targets/mqtt_decode.rs: 0 = before
CONNECT, 1 = MQTT 3.1.1, 2 = MQTT 5, max packet size unlimited) followed by
a stream of packets. Run from anywhere: python3 fuzz/gen_mqtt_seeds.py
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "mqtt_decode")

BEFORE_CONNECT, V311, V5 = 0, 1, 2


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def u16(n):
    return struct.pack(">H", n)


def u32(n):
    return struct.pack(">I", n)


def s(text):  # UTF-8 string / binary data: two-byte length prefix
    b = text.encode() if isinstance(text, str) else text
    return u16(len(b)) + b


def props(*items):
    body = b"".join(items)
    return varint(len(body)) + body


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


# Properties (spec 2.2.2.2).
def payload_format(v): return b"\x01" + bytes([v])
def message_expiry(v): return b"\x02" + u32(v)
def content_type(v): return b"\x03" + s(v)
def response_topic(v): return b"\x08" + s(v)
def correlation_data(v): return b"\x09" + s(v)
def subscription_id(v): return b"\x0b" + varint(v)
def session_expiry(v): return b"\x11" + u32(v)
def auth_method(v): return b"\x15" + s(v)
def auth_data(v): return b"\x16" + s(v)
def receive_maximum(v): return b"\x21" + u16(v)
def topic_alias(v): return b"\x23" + u16(v)
def user_property(k, v): return b"\x26" + s(k) + s(v)
def max_packet_size(v): return b"\x27" + u32(v)


def seeds():
    token = b"eyJhbGciOiJIUzI1NiJ9.e30.sig"
    # v5 CONNECT with enhanced auth (X-OAUTH2 + token in Authentication
    # Data), then the AUTH continue round, a PUBLISH and DISCONNECT.
    v5_connect = packet(0x10, s("MQTT") + b"\x05" + b"\x02" + u16(60)
                        + props(session_expiry(3600), receive_maximum(20),
                                max_packet_size(65536), auth_method("X-OAUTH2"),
                                auth_data(token))
                        + s("sensor-17"))
    yield "seed-v5-connect-auth", bytes([BEFORE_CONNECT]) + v5_connect \
        + packet(0xF0, b"\x18" + props(auth_method("X-OAUTH2"), auth_data(token))) \
        + packet(0x30, s("a/b") + props() + b"hi") + b"\xe0\x00"

    # v5 CONNECT with a will, user name and password.
    will_flags = 0x80 | 0x40 | 0x20 | (1 << 3) | 0x04 | 0x02
    yield "seed-v5-connect-will", bytes([BEFORE_CONNECT]) + packet(
        0x10, s("MQTT") + b"\x05" + bytes([will_flags]) + u16(30)
        + props(user_property("k", "v"))
        + s("c1")
        + props(b"\x18" + u32(5), content_type("text/plain"))  # will delay, will props
        + s("dev/c1/status") + s(b"offline")
        + s("alice") + s(b"secret"))

    # 3.1.1 CONNECT (clean session, user name + password), then a session.
    yield "seed-v311-connect", bytes([BEFORE_CONNECT]) + packet(
        0x10, s("MQTT") + b"\x04" + bytes([0x80 | 0x40 | 0x02]) + u16(60)
        + s("client-311") + s("bob") + s(b"oauth-token")) \
        + packet(0x82, u16(1) + s("home/+/temp") + b"\x01" + s("cmd/#") + b"\x00") \
        + packet(0x32, s("home/kitchen/temp") + u16(2) + b"21.5") \
        + b"\xc0\x00" + b"\xe0\x00"

    # PUBLISH QoS 0 / 1 / 2 with properties (v5).
    yield "seed-v5-publish-qos0", bytes([V5]) + packet(
        0x30, s("sensors/room1/temp")
        + props(payload_format(1), message_expiry(120), content_type("application/json"),
                user_property("unit", "C"))
        + b'{"t":21.5}')
    yield "seed-v5-publish-qos1", bytes([V5]) + packet(
        0x33, s("req/svc") + u16(7)
        + props(topic_alias(3), response_topic("resp/c1"), correlation_data(b"\x00\x01\x02"))
        + b"ping") \
        + packet(0x32, s("") + u16(8) + props(topic_alias(3)) + b"again") \
        + packet(0x40, u16(7) + b"\x00" + props()) + packet(0x40, u16(8))
    yield "seed-v5-publish-qos2", bytes([V5]) + packet(
        0x3D, s("a/b/c") + u16(0x1234)
        + props(subscription_id(1), subscription_id(268435455)) + bytes(range(32))) \
        + packet(0x50, u16(0x1234)) + packet(0x62, u16(0x1234) + b"\x92" + props()) \
        + packet(0x70, u16(0x1234))

    # SUBSCRIBE with options and a Subscription Identifier, UNSUBSCRIBE,
    # and the acks (the codec is direction-agnostic).
    yield "seed-v5-subscribe", bytes([V5]) + packet(
        0x82, u16(10) + props(subscription_id(42), user_property("a", "b"))
        + s("sport/+/player1") + bytes([0b00101110])
        + s("$share/g1/jobs/#") + b"\x01"
        + s("#") + b"\x00") \
        + packet(0x90, u16(10) + props() + b"\x02\x01\x87") \
        + packet(0xA2, u16(11) + props() + s("sport/+/player1")) \
        + packet(0xB0, u16(11) + props() + b"\x00")

    # AUTH re-authenticate and continue; CONNACK success with properties.
    yield "seed-v5-auth", bytes([V5]) \
        + packet(0xF0, b"\x19" + props(auth_method("X-OAUTH2"), auth_data(token),
                                       b"\x1f" + s("reauth"))) \
        + packet(0xF0, b"\x18" + props(auth_method("SCRAM-SHA-256"), auth_data(b"c=biws"))) \
        + packet(0x20, b"\x00\x00" + props(b"\x12" + s("auto-1"), b"\x13" + u16(30))) \
        + b"\xf0\x00"

    # The ordinary v5 DISCONNECT (remaining length 0 = normal, 3.14.2.1),
    # then one with a reason code and properties.
    yield "seed-v5-disconnect", bytes([V5]) + b"\xe0\x00" \
        + packet(0xE0, b"\x8e" + props(b"\x1f" + s("taken over"))) + b"\xd0\x00"


# mqtt_connection seeds: clock step (s), login the harness sends first
# (0 none, 1 v5 token, 2 3.1.1 token as password, 3 v5 password), then the
# client's packets after it (see petrel::fuzzing::mqtt_connection).
NO_LOGIN, V5_TOKEN, V311_TOKEN, V5_PASSWORD = 0, 1, 2, 3


def connection_seeds():
    by_name = dict(seeds())
    after = lambda name: by_name[name][1:]  # drop the decoder selector
    yield "seed-v5-session", bytes([0, V5_TOKEN]) + after("seed-v5-subscribe") \
        + after("seed-v5-publish-qos0") + after("seed-v5-publish-qos1") \
        + after("seed-v5-publish-qos2") + after("seed-v5-disconnect")
    yield "seed-v5-retained-and-will-clock", bytes([30, V5_PASSWORD]) \
        + packet(0x31, s("r/a") + props(message_expiry(60)) + b"kept") \
        + packet(0x82, u16(2) + props() + s("r/#") + bytes([0b00000001])) \
        + b"\xc0\x00" * 3 + after("seed-v5-auth")
    yield "seed-v311-session", bytes([1, V311_TOKEN]) \
        + packet(0x82, u16(1) + s("home/+/temp") + b"\x01") \
        + packet(0x32, s("home/kitchen/temp") + u16(2) + b"21.5") \
        + packet(0x34, s("home/kitchen/temp") + u16(3) + b"22") + packet(0x62, u16(3)) \
        + packet(0xA2, u16(4) + s("home/+/temp")) + b"\xc0\x00" + b"\xe0\x00"
    yield "seed-own-connect", bytes([0, NO_LOGIN]) + after("seed-v5-connect-auth")
    yield "seed-own-connect-311", bytes([0, NO_LOGIN]) + after("seed-v311-connect")


def write(out, items):
    os.makedirs(out, exist_ok=True)
    for name, data in items:
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        print(f"{os.path.basename(out)}/{name}: {len(data)} bytes")


def main():
    write(OUT, seeds())
    write(os.path.join(os.path.dirname(OUT), "mqtt_connection"), connection_seeds())


if __name__ == "__main__":
    main()
