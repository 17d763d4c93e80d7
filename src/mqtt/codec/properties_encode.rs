//! Encoding half of [`Properties`]: sizing (with validation) and writing.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::EncodeError;
use super::properties::{allowed, id, Properties, PropertyContext};
use super::wire::{field_len, put_field, put_varint, varint_len, MAX_VARINT};

impl Properties {
    /// Size of the properties themselves (without the length prefix), after
    /// checking that each one is allowed in `ctx` and fits its wire type.
    pub(super) fn content_len(&self, ctx: PropertyContext) -> Result<usize, EncodeError> {
        self.content_len_with(ctx, &self.subscription_identifiers)
    }

    /// `content_len` with the Subscription Identifiers replaced by `sub_ids`
    /// (per-subscriber values during PUBLISH fan-out, without cloning).
    pub(super) fn content_len_with(
        &self,
        ctx: PropertyContext,
        sub_ids: &[u32],
    ) -> Result<usize, EncodeError> {
        let mut len = 0usize;
        let mut check = |pid: u8, size: usize| -> Result<(), EncodeError> {
            if allowed(pid) & ctx.bit() == 0 {
                return Err(EncodeError::Invalid(
                    "property not allowed in this packet type",
                ));
            }
            len += 1 + size;
            Ok(())
        };
        let s = |v: &Option<String>| v.as_ref().map(|s| field_len(s.len())).transpose();
        let b = |v: &Option<Bytes>| v.as_ref().map(|s| field_len(s.len())).transpose();
        if self.payload_format_indicator.is_some() {
            check(id::PAYLOAD_FORMAT_INDICATOR, 1)?;
        }
        if self.message_expiry_interval.is_some() {
            check(id::MESSAGE_EXPIRY_INTERVAL, 4)?;
        }
        if let Some(n) = s(&self.content_type)? {
            check(id::CONTENT_TYPE, n)?;
        }
        if let Some(n) = s(&self.response_topic)? {
            check(id::RESPONSE_TOPIC, n)?;
        }
        if let Some(n) = b(&self.correlation_data)? {
            check(id::CORRELATION_DATA, n)?;
        }
        for &v in sub_ids {
            if v == 0 || v as usize > MAX_VARINT {
                return Err(EncodeError::Invalid("Subscription Identifier out of range"));
            }
            check(id::SUBSCRIPTION_IDENTIFIER, varint_len(v as usize))?;
        }
        if self.session_expiry_interval.is_some() {
            check(id::SESSION_EXPIRY_INTERVAL, 4)?;
        }
        if let Some(n) = s(&self.assigned_client_identifier)? {
            check(id::ASSIGNED_CLIENT_IDENTIFIER, n)?;
        }
        if self.server_keep_alive.is_some() {
            check(id::SERVER_KEEP_ALIVE, 2)?;
        }
        if let Some(n) = s(&self.authentication_method)? {
            check(id::AUTHENTICATION_METHOD, n)?;
        }
        if let Some(n) = b(&self.authentication_data)? {
            check(id::AUTHENTICATION_DATA, n)?;
        }
        if self.request_problem_information.is_some() {
            check(id::REQUEST_PROBLEM_INFORMATION, 1)?;
        }
        if self.will_delay_interval.is_some() {
            check(id::WILL_DELAY_INTERVAL, 4)?;
        }
        if self.request_response_information.is_some() {
            check(id::REQUEST_RESPONSE_INFORMATION, 1)?;
        }
        if let Some(n) = s(&self.response_information)? {
            check(id::RESPONSE_INFORMATION, n)?;
        }
        if let Some(n) = s(&self.server_reference)? {
            check(id::SERVER_REFERENCE, n)?;
        }
        if let Some(n) = s(&self.reason_string)? {
            check(id::REASON_STRING, n)?;
        }
        if self.receive_maximum.is_some() {
            check(id::RECEIVE_MAXIMUM, 2)?;
        }
        if self.topic_alias_maximum.is_some() {
            check(id::TOPIC_ALIAS_MAXIMUM, 2)?;
        }
        if self.topic_alias.is_some() {
            check(id::TOPIC_ALIAS, 2)?;
        }
        if self.maximum_qos.is_some() {
            check(id::MAXIMUM_QOS, 1)?;
        }
        if self.retain_available.is_some() {
            check(id::RETAIN_AVAILABLE, 1)?;
        }
        for (k, v) in &self.user_properties {
            check(id::USER_PROPERTY, field_len(k.len())? + field_len(v.len())?)?;
        }
        if self.maximum_packet_size.is_some() {
            check(id::MAXIMUM_PACKET_SIZE, 4)?;
        }
        if self.wildcard_subscription_available.is_some() {
            check(id::WILDCARD_SUBSCRIPTION_AVAILABLE, 1)?;
        }
        if self.subscription_identifier_available.is_some() {
            check(id::SUBSCRIPTION_IDENTIFIER_AVAILABLE, 1)?;
        }
        if self.shared_subscription_available.is_some() {
            check(id::SHARED_SUBSCRIPTION_AVAILABLE, 1)?;
        }
        if len > MAX_VARINT {
            return Err(EncodeError::PacketTooLarge);
        }
        Ok(len)
    }

    /// Size of the whole block including its varint length prefix.
    #[cfg(test)]
    pub(super) fn block_len(&self, ctx: PropertyContext) -> Result<usize, EncodeError> {
        let n = self.content_len(ctx)?;
        Ok(varint_len(n) + n)
    }

    /// Write the block; `content_len` is the value `content_len()` returned.
    /// Properties go out in identifier order (any order is valid, 2.2.2.2).
    pub(super) fn write(&self, content_len: usize, out: &mut BytesMut) {
        self.write_with(content_len, &self.subscription_identifiers, None, None, out)
    }

    /// `write` with the Subscription Identifiers replaced by `sub_ids` and
    /// the Message Expiry Interval's value (if present) by `expiry_left`
    /// (same size on the wire, so `content_len` holds).
    ///
    /// `alias` adds a Topic Alias (the caller counted its 3 bytes in
    /// `content_len`): the server's own alias towards one client.
    pub(super) fn write_with(
        &self,
        content_len: usize,
        sub_ids: &[u32],
        expiry_left: Option<u32>,
        alias: Option<u16>,
        out: &mut BytesMut,
    ) {
        put_varint(out, content_len);
        if content_len == 0 {
            return;
        }
        let start = out.len();
        let byte = |out: &mut BytesMut, pid: u8, v: Option<u8>| {
            if let Some(v) = v {
                out.put_u8(pid);
                out.put_u8(v);
            }
        };
        let u16p = |out: &mut BytesMut, pid: u8, v: Option<u16>| {
            if let Some(v) = v {
                out.put_u8(pid);
                out.put_u16(v);
            }
        };
        let u32p = |out: &mut BytesMut, pid: u8, v: Option<u32>| {
            if let Some(v) = v {
                out.put_u8(pid);
                out.put_u32(v);
            }
        };
        let strp = |out: &mut BytesMut, pid: u8, v: &Option<String>| {
            if let Some(v) = v {
                out.put_u8(pid);
                put_field(out, v.as_bytes());
            }
        };
        let binp = |out: &mut BytesMut, pid: u8, v: &Option<Bytes>| {
            if let Some(v) = v {
                out.put_u8(pid);
                put_field(out, v);
            }
        };
        let b = |v: Option<bool>| v.map(u8::from);
        byte(
            out,
            id::PAYLOAD_FORMAT_INDICATOR,
            b(self.payload_format_indicator),
        );
        u32p(
            out,
            id::MESSAGE_EXPIRY_INTERVAL,
            self.message_expiry_interval
                .map(|e| expiry_left.unwrap_or(e)),
        );
        strp(out, id::CONTENT_TYPE, &self.content_type);
        strp(out, id::RESPONSE_TOPIC, &self.response_topic);
        binp(out, id::CORRELATION_DATA, &self.correlation_data);
        for &v in sub_ids {
            out.put_u8(id::SUBSCRIPTION_IDENTIFIER);
            put_varint(out, v as usize);
        }
        u32p(
            out,
            id::SESSION_EXPIRY_INTERVAL,
            self.session_expiry_interval,
        );
        strp(
            out,
            id::ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        );
        u16p(out, id::SERVER_KEEP_ALIVE, self.server_keep_alive);
        strp(out, id::AUTHENTICATION_METHOD, &self.authentication_method);
        binp(out, id::AUTHENTICATION_DATA, &self.authentication_data);
        byte(
            out,
            id::REQUEST_PROBLEM_INFORMATION,
            b(self.request_problem_information),
        );
        u32p(out, id::WILL_DELAY_INTERVAL, self.will_delay_interval);
        byte(
            out,
            id::REQUEST_RESPONSE_INFORMATION,
            b(self.request_response_information),
        );
        strp(out, id::RESPONSE_INFORMATION, &self.response_information);
        strp(out, id::SERVER_REFERENCE, &self.server_reference);
        strp(out, id::REASON_STRING, &self.reason_string);
        u16p(out, id::RECEIVE_MAXIMUM, self.receive_maximum);
        u16p(out, id::TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        u16p(out, id::TOPIC_ALIAS, self.topic_alias.or(alias));
        byte(out, id::MAXIMUM_QOS, self.maximum_qos);
        byte(out, id::RETAIN_AVAILABLE, b(self.retain_available));
        for (k, v) in &self.user_properties {
            out.put_u8(id::USER_PROPERTY);
            put_field(out, k.as_bytes());
            put_field(out, v.as_bytes());
        }
        u32p(out, id::MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        byte(
            out,
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            b(self.wildcard_subscription_available),
        );
        byte(
            out,
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            b(self.subscription_identifier_available),
        );
        byte(
            out,
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            b(self.shared_subscription_available),
        );
        debug_assert_eq!(out.len() - start, content_len);
    }
}
