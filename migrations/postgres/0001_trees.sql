-- Petrel's store on PostgreSQL, version 1: one table per tree of the
-- store (DESIGN.md: one table per kind of record), each an ordered map of
-- the bytes the embedded store keeps (versioned records, keys as sled
-- orders them; bytea compares byte by byte, so prefixes and key ranges
-- are index range scans in the same order).
CREATE TABLE petrel_users (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_clients (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_tokens (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_token_expiry (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_meta (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_retained (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_sessions (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_mqtt_queue (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_offline (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_roster (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_blocklist (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_archive (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_mam_prefs (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_account_xml (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_muc_rooms (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_pep (key bytea PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE petrel_pubsub (key bytea PRIMARY KEY, value bytea NOT NULL);
